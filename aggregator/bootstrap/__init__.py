"""One-shot set-up steps for a deployment (docs/operations.md, "Deploying with Compose").

- :mod:`.certs`: a private CA and a server certificate for OpenBao on the Compose network;
- :mod:`.openbao`: initialise, unseal and configure OpenBao for the gateway (Transit keys,
  a least-privilege policy, an AppRole), idempotently.
"""
