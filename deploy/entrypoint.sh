#!/bin/sh
# For every VARIABLE_FILE in the environment, export VARIABLE with that file's content and
# drop VARIABLE_FILE: secrets come from Compose `secrets:` files, never from the Compose
# file or `docker inspect`. (A leftover AGGREGATOR_REGION_*_FILE would be refused as an
# unknown setting, hence the unset.) Then run the command.
set -eu
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)_FILE=.*/\1/p'); do
  file=$(printenv "${name}_FILE")
  if [ ! -r "$file" ]; then
    echo "aggregator-entrypoint: ${name}_FILE names $file, which cannot be read" >&2
    exit 1
  fi
  value=$(cat "$file")
  export "$name=$value"
  unset "${name}_FILE"
done
exec "$@"
