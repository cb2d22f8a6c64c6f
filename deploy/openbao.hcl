# OpenBao for docker-compose.yml: persistent integrated (raft) storage and TLS on the
# Compose network. Not dev mode: keys survive restarts, and a restarted server starts
# sealed (unseal it with `docker compose run --rm vault-init`; docs/operations.md,
# "Deploying with Compose"). tests/aggregator/test_openbao_bootstrap.py runs this file.
storage "raft" {
  path    = "/openbao/data"
  node_id = "openbao-1"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/openbao/tls/server.crt"
  tls_key_file    = "/openbao/tls/server.key"
}

api_addr     = "https://vault:8200"
cluster_addr = "https://vault:8201"
ui           = false
