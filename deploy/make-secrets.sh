#!/bin/sh
# Creates ./secrets/ (0700) with each region's PostgreSQL password and the matching
# database URL for the gateway, each file 0600; existing files are kept. Run it from the
# directory holding docker-compose.yml. The AppRole secret id is written there later by
# `docker compose run --rm vault-init`.
set -eu
umask 077
mkdir -p secrets
for region in eu us; do
  password_file="secrets/postgres_password_$region"
  if [ ! -f "$password_file" ]; then
    python3 -c 'import secrets; print(secrets.token_urlsafe(32), end="")' > "$password_file"
  fi
  url_file="secrets/database_url_$region"
  if [ ! -f "$url_file" ]; then
    printf 'postgresql+psycopg://gateway:%s@postgres-%s/gateway' \
      "$(cat "$password_file")" "$region" > "$url_file"
  fi
done
# Compose hands file secrets to containers with the host file's owner and mode: the
# gateway image runs as uid 10001, PostgreSQL's as uid 999.
if [ "$(id -u)" = 0 ]; then
  chown 10001:10001 secrets/database_url_eu secrets/database_url_us
  chown 999:999 secrets/postgres_password_eu secrets/postgres_password_us
else
  echo "as root, run: chown 10001:10001 secrets/database_url_*;" \
       "chown 999:999 secrets/postgres_password_*" >&2
fi
echo "secrets/: database passwords and URLs for eu and us (0600)"
