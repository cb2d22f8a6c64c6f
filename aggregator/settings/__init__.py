"""Settings: one TOML file plus environment overrides, read once into typed values.

Zero configuration works: without a file the gateway runs regions ``eu`` and ``us`` on
SQLite files under ``./var/`` with a local keyring under ``./var/keys/``. The file is
``$AGGREGATOR_CONFIG``, else ``./aggregator.toml`` if present. Every key is optional
unless marked; an unknown key is refused at start-up. Secrets are never written in the
file: a ``*_env`` key names the variable holding them.

Example ``aggregator.toml`` with every setting::

    data_dir = "var"                     # SQLite files, the local keyring, sandbox keys

    [http]
    public_url = "https://gateway.example"   # where browsers and banks reach us (https;
                                             # http only on loopback); needed with Plaid

    [banks]
    directories = ["banks.d"]            # extra bank profile directories
    sandbox = false                      # offer the built-in sandbox banks (every profile
                                         # in connectors/banks/); the demo and `dev` set it

    [keys]
    cache_ttl_seconds = 300              # data-key cache
    cache_size = 10000
    rotate_every = "90d"                 # the worker rotates each region's KEK (h, d, w;
                                         # "off" or absent: never)

    [regions.eu]                         # default regions: eu, us
    database_url = "postgresql+psycopg://gateway@db-eu/gateway"  # default: SQLite file
    [regions.eu.keys]
    provider = "transit"                 # local (default) | pkcs11 | transit
    rotate_every = "30d"                 # this region's own period ("off": never)
    # local:   directory = "var/keys", kek_id = "<region>"
    # pkcs11:  module = "/usr/lib/softhsm/libsofthsm2.so" (required),
    #          token_label = "gw-eu" (required), pin_env = "HSM_PIN_EU" (required),
    #          kek_label = "aggregator-<region>"
    # transit: url (required), key_name = "aggregator-<region>", mount = "transit",
    #          token_env, or approle_role_id with approle_secret_id_env,
    #          approle_mount = "approle", namespace, ca_cert, timeout_seconds = 5
    url = "https://vault.eu.internal:8200"
    key_name = "aggregator-eu"
    token_env = "VAULT_TOKEN_EU"

    [regions.us.plaid]                   # optional: this region links through Plaid
    client_id = "5f…"                    # required
    secret_env = "PLAID_SECRET_US"       # the variable holding the secret, or:
    # secret_vault_path = "plaid/us"     # a KV v2 secret read at start-up through the
    # secret_vault_mount = "secret"      #   region's Transit connection (its URL and
    # secret_vault_field = "secret"      #   auth); mount and field default as shown
    environment = "production"           # sandbox (default) | production
    products = ["transactions"]          # default
    country_codes = ["US", "CA"]         # default ["US"]
    # host = "https://plaid-proxy.internal"  # overrides the environment's API host
    # daily_budget = 4                   # webhook-triggered syncs per rolling 24 h
    # webhook_key_recheck = 300          # s a key Plaid expired can still verify (1-3600)

    [erasure]
    deadline_days = 30                   # statutory deadline of a request (CCPA: 45)
    revoke_per_bank = 4                  # revocation calls in flight at one bank (1-32)
    revoke_concurrency = 16              # … and at all banks, per process (1-256)

    [worker]
    consent_warning_days = 7             # connection.consent_expiring this long before

    [rate_limits]                        # see aggregator.http.ratelimit
    enabled = true
    backend = "database"                 # database | redis | memory (one process only)
    trusted_proxies = ["10.0.0.0/8"]     # whose X-Forwarded-For is believed
    [rate_limits.redis]                  # backend = "redis" only
    url = "redis://127.0.0.1:6379/0"     # required; no password in the URL
    password_env = "REDIS_PASSWORD"
    key_prefix = "aggregator:rl:"
    [rate_limits.classes.read]           # read | write | link | unauthenticated
    capacity = 300                       # burst, in requests
    refill_per_second = 50               # sustained rate
    [rate_limits.applications.app_7dz2.write]   # one application's own limit
    capacity = 600
    refill_per_second = 100

    [egress]                             # where the gateway may send requests (SSRF guard)
    allow_http_loopback = false          # true only for development against 127.0.0.1
    allowed_networks = ["10.20.0.0/16"]  # private networks vouched for (https only)
    allowed_hosts = ["bank-proxy.corp"]  # names that may resolve to private addresses
    max_response_bytes = 10485760
    timeout_seconds = 10                 # per read/write
    connect_timeout_seconds = 5
    total_timeout_seconds = 30

Environment variables, all mapped in :mod:`aggregator.settings.env`, each overriding
the file's key of the same path. A variable that is present applies even when empty (an
empty list clears the file's list; an empty required value is refused), except
``AGGREGATOR_REGIONS``, ``AGGREGATOR_DATA_DIR``, ``AGGREGATOR_PUBLIC_URL`` and
``AGGREGATOR_WORKER_CONSENT_WARNING_DAYS``, which an empty value leaves unset. Lists are
comma-separated, flags ``true``/``false``/``1``/``0``:

- ``AGGREGATOR_CONFIG`` (the file), ``AGGREGATOR_REGIONS=eu,us`` (which regions run),
  ``AGGREGATOR_DATA_DIR``, ``AGGREGATOR_PUBLIC_URL``, ``AGGREGATOR_KEYS_ROTATE_EVERY``,
  ``AGGREGATOR_ERASURE_DEADLINE_DAYS``, ``AGGREGATOR_ERASURE_REVOKE_PER_BANK``,
  ``AGGREGATOR_ERASURE_REVOKE_CONCURRENCY``, ``AGGREGATOR_WORKER_CONSENT_WARNING_DAYS``,
  ``AGGREGATOR_BANKS_SANDBOX``;
- ``AGGREGATOR_RATE_LIMITS_ENABLED``, ``AGGREGATOR_RATE_LIMITS_BACKEND``,
  ``AGGREGATOR_RATE_LIMITS_REDIS_URL``, ``AGGREGATOR_RATE_LIMITS_TRUSTED_PROXIES``;
- ``AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK``, ``AGGREGATOR_EGRESS_ALLOWED_NETWORKS``,
  ``AGGREGATOR_EGRESS_ALLOWED_HOSTS``, ``AGGREGATOR_EGRESS_MAX_RESPONSE_BYTES``,
  ``AGGREGATOR_EGRESS_TIMEOUT_SECONDS``, ``AGGREGATOR_EGRESS_CONNECT_TIMEOUT_SECONDS``,
  ``AGGREGATOR_EGRESS_TOTAL_TIMEOUT_SECONDS``;
- per region, ``AGGREGATOR_REGION_<NAME>_<SETTING>``: ``DATABASE_URL``;
  ``KEYS_PROVIDER``, ``KEYS_ROTATE_EVERY``, ``KEYS_DIRECTORY``, ``KEYS_KEK_ID``,
  ``KEYS_MODULE``, ``KEYS_TOKEN_LABEL``, ``KEYS_PIN_ENV``, ``KEYS_KEK_LABEL``, ``KEYS_URL``,
  ``KEYS_KEY_NAME``, ``KEYS_MOUNT``, ``KEYS_TOKEN_ENV``, ``KEYS_APPROLE_ROLE_ID``,
  ``KEYS_APPROLE_SECRET_ID_ENV``, ``KEYS_NAMESPACE``, ``KEYS_CA_CERT``;
  ``PLAID_CLIENT_ID``, ``PLAID_SECRET_ENV``, ``PLAID_SECRET_VAULT_PATH``,
  ``PLAID_SECRET_VAULT_MOUNT``, ``PLAID_SECRET_VAULT_FIELD``, ``PLAID_ENVIRONMENT``,
  ``PLAID_HOST``, ``PLAID_PRODUCTS``, ``PLAID_COUNTRY_CODES``, ``PLAID_DAILY_BUDGET``,
  ``PLAID_WEBHOOK_KEY_RECHECK``;
  e.g. ``AGGREGATOR_REGION_EU_DATABASE_URL`` (a region with Plaid needs ``public_url``:
  Plaid sends its webhooks to ``{public_url}/webhooks/plaid/{region}``). A variable with
  a configured region's prefix and any other suffix is refused.

Set by no variable: ``[banks] directories``, ``[keys] cache_*``, a region's ``keys.approle_mount``
and ``keys.timeout_seconds``, ``[rate_limits.classes]``, ``[rate_limits.applications]``,
``[rate_limits.redis] password_env`` and ``key_prefix``.
"""

from aggregator.settings.env import ENV_VARIABLES, REGION_ENV_VARIABLES
from aggregator.settings.keys import KeySettings
from aggregator.settings.loader import Settings, load_settings
from aggregator.settings.plaid import PlaidRegion, VaultSecretRef
from aggregator.settings.rate_limits import (
    DEFAULT_RATE_LIMITS,
    RATE_LIMIT_BACKENDS,
    IPNetwork,
    RateLimit,
    RateLimitSettings,
)
from aggregator.settings.regions import DEFAULT_REGIONS, REGION_NAME, RegionSettings
from aggregator.settings.worker import WorkerSettings

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "DEFAULT_REGIONS",
    "ENV_VARIABLES",
    "RATE_LIMIT_BACKENDS",
    "REGION_ENV_VARIABLES",
    "REGION_NAME",
    "IPNetwork",
    "KeySettings",
    "PlaidRegion",
    "RateLimit",
    "RateLimitSettings",
    "RegionSettings",
    "Settings",
    "VaultSecretRef",
    "WorkerSettings",
    "load_settings",
]
