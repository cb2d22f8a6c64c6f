"""Settings: one TOML file plus environment overrides, read once into typed values.

Zero configuration works: without a file the gateway runs regions ``eu`` and ``us`` on
SQLite files under ``./var/`` with a local keyring under ``./var/keys/``.

Example ``aggregator.toml``::

    data_dir = "var"

    [keys]
    cache_ttl_seconds = 300
    rotate_every = "90d"                 # the worker rotates each region's KEK (h, d, w)

    [erasure]
    deadline_days = 30                   # statutory deadline of a request (CCPA: 45)

    [http]
    public_url = "https://gateway.example"   # where browsers and banks reach us

    [worker]
    consent_warning_days = 7     # connection.consent_expiring this long before the end

    [rate_limits]                        # see aggregator.http.ratelimit
    backend = "database"                 # database | redis | memory (one process only)
    trusted_proxies = ["10.0.0.0/8"]     # whose X-Forwarded-For is believed
    [rate_limits.redis]
    url = "redis://127.0.0.1:6379/0"
    password_env = "REDIS_PASSWORD"
    [rate_limits.classes.read]           # read | write | link | unauthenticated
    capacity = 300                       # burst, in requests
    refill_per_second = 50               # sustained rate
    [rate_limits.applications.app_7dz2.write]   # one application's own limit
    capacity = 600
    refill_per_second = 100

    [regions.eu]
    database_url = "postgresql+psycopg://gateway@db-eu/gateway"
    [regions.eu.keys]
    provider = "transit"                 # local | pkcs11 | transit
    rotate_every = "30d"                 # this region's own period ("off": never)
    url = "https://vault.eu.internal:8200"
    key_name = "aggregator-eu"
    token_env = "VAULT_TOKEN_EU"         # secrets are named, never written here

    [egress]                             # where the gateway may send requests (SSRF guard)
    allow_http_loopback = false          # true only for development against 127.0.0.1
    allowed_networks = ["10.20.0.0/16"]  # private networks vouched for (https only)
    allowed_hosts = ["bank-proxy.corp"]  # names that may resolve to private addresses
    max_response_bytes = 10485760
    timeout_seconds = 10                 # also connect_timeout_seconds, total_timeout_seconds

    [regions.us.plaid]                   # optional: this region links through Plaid
    client_id = "5f…"
    secret_env = "PLAID_SECRET_US"       # the variable holding the secret, or:
    # secret_vault_path = "plaid/us"     # a KV v2 secret read at start-up through the
    # secret_vault_mount = "secret"      #   region's Transit connection (its URL and
    # secret_vault_field = "secret"      #   auth); mount and field default as shown
    environment = "production"           # sandbox (default) | production
    products = ["transactions"]          # default
    country_codes = ["US", "CA"]         # default ["US"]
    # host = "https://plaid-proxy.internal"  # overrides the environment's API host
    # daily_budget = 4                   # webhook-triggered syncs per rolling 24 h

Environment overrides (the one place they are mapped, see :data:`ENV_SETTINGS`):
``AGGREGATOR_DATA_DIR``, ``AGGREGATOR_PUBLIC_URL``, ``AGGREGATOR_REGIONS=eu,us`` (which
regions run), the ``[rate_limits]`` keys of :data:`GLOBAL_ENV_SETTINGS`
(``AGGREGATOR_RATE_LIMITS_BACKEND``, ``…_ENABLED``, ``…_REDIS_URL``,
``…_TRUSTED_PROXIES`` as a comma-separated list), ``AGGREGATOR_ERASURE_DEADLINE_DAYS``,
``AGGREGATOR_KEYS_ROTATE_EVERY``, and
``AGGREGATOR_REGION_<NAME>_<SETTING>`` for each per-region setting, e.g.
``AGGREGATOR_REGION_EU_DATABASE_URL``, ``AGGREGATOR_REGION_EU_KEYS_PROVIDER`` or
``AGGREGATOR_REGION_US_PLAID_CLIENT_ID`` (a region with Plaid needs ``public_url``: Plaid
sends its webhooks to ``{public_url}/webhooks/plaid/{region}``); and
``AGGREGATOR_WORKER_<SETTING>`` for each ``[worker]`` setting (:data:`WORKER_ENV`); and
``AGGREGATOR_EGRESS_<SETTING>`` for each ``[egress]`` setting (:data:`ENV_EGRESS`), lists
comma-separated, e.g. ``AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK=true``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aggregator.errors import ConfigError
from connectors import EgressPolicy, PlaidConfig, PlaidEnvironment, SyncPolicy
from vault import LocalKeyringConfig, Pkcs11Config, ProviderConfig, Secret, TransitConfig

DEFAULT_REGIONS = ("eu", "us")
REGION_NAME = re.compile(r"^[a-z]{2,8}$")

#: Per-region settings that an environment variable may override, by variable suffix.
ENV_SETTINGS: Mapping[str, tuple[str, ...]] = {
    "DATABASE_URL": ("database_url",),
    "KEYS_PROVIDER": ("keys", "provider"),
    "KEYS_DIRECTORY": ("keys", "directory"),
    "KEYS_KEK_ID": ("keys", "kek_id"),
    "KEYS_MODULE": ("keys", "module"),
    "KEYS_TOKEN_LABEL": ("keys", "token_label"),
    "KEYS_PIN_ENV": ("keys", "pin_env"),
    "KEYS_KEK_LABEL": ("keys", "kek_label"),
    "KEYS_URL": ("keys", "url"),
    "KEYS_KEY_NAME": ("keys", "key_name"),
    "KEYS_MOUNT": ("keys", "mount"),
    "KEYS_TOKEN_ENV": ("keys", "token_env"),
    "KEYS_APPROLE_ROLE_ID": ("keys", "approle_role_id"),
    "KEYS_APPROLE_SECRET_ID_ENV": ("keys", "approle_secret_id_env"),
    "KEYS_NAMESPACE": ("keys", "namespace"),
    "KEYS_CA_CERT": ("keys", "ca_cert"),
    "KEYS_ROTATE_EVERY": ("keys", "rotate_every"),
    "PLAID_CLIENT_ID": ("plaid", "client_id"),
    "PLAID_SECRET_ENV": ("plaid", "secret_env"),
    "PLAID_SECRET_VAULT_PATH": ("plaid", "secret_vault_path"),
    "PLAID_SECRET_VAULT_MOUNT": ("plaid", "secret_vault_mount"),
    "PLAID_SECRET_VAULT_FIELD": ("plaid", "secret_vault_field"),
    "PLAID_ENVIRONMENT": ("plaid", "environment"),
    "PLAID_HOST": ("plaid", "host"),
    "PLAID_PRODUCTS": ("plaid", "products"),
    "PLAID_COUNTRY_CODES": ("plaid", "country_codes"),
    "PLAID_DAILY_BUDGET": ("plaid", "daily_budget"),
}

#: ``[worker]`` settings an environment variable may override, by variable name.
WORKER_ENV: Mapping[str, str] = {
    "AGGREGATOR_WORKER_CONSENT_WARNING_DAYS": "consent_warning_days",
}

#: ``[egress]`` settings that an environment variable may override, by variable name.
ENV_EGRESS: Mapping[str, str] = {
    "AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK": "allow_http_loopback",
    "AGGREGATOR_EGRESS_ALLOWED_NETWORKS": "allowed_networks",
    "AGGREGATOR_EGRESS_ALLOWED_HOSTS": "allowed_hosts",
    "AGGREGATOR_EGRESS_MAX_RESPONSE_BYTES": "max_response_bytes",
    "AGGREGATOR_EGRESS_TIMEOUT_SECONDS": "timeout_seconds",
    "AGGREGATOR_EGRESS_CONNECT_TIMEOUT_SECONDS": "connect_timeout_seconds",
    "AGGREGATOR_EGRESS_TOTAL_TIMEOUT_SECONDS": "total_timeout_seconds",
}

#: Settings outside any region that an environment variable may override.
GLOBAL_ENV_SETTINGS: Mapping[str, tuple[str, ...]] = {
    "AGGREGATOR_RATE_LIMITS_ENABLED": ("rate_limits", "enabled"),
    "AGGREGATOR_RATE_LIMITS_BACKEND": ("rate_limits", "backend"),
    "AGGREGATOR_RATE_LIMITS_REDIS_URL": ("rate_limits", "redis", "url"),
    "AGGREGATOR_RATE_LIMITS_TRUSTED_PROXIES": ("rate_limits", "trusted_proxies"),
    "AGGREGATOR_ERASURE_DEADLINE_DAYS": ("erasure", "deadline_days"),
    "AGGREGATOR_KEYS_ROTATE_EVERY": ("keys", "rotate_every"),
}

#: ``rotate_every``: a whole number of hours, days or weeks ("90d"), or "off".
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}

_PROVIDER_KEYS: Mapping[str, frozenset[str]] = {
    "local": frozenset({"provider", "directory", "kek_id"}),
    "pkcs11": frozenset({"provider", "module", "token_label", "pin_env", "kek_label"}),
    "transit": frozenset({
        "provider", "url", "key_name", "mount", "token_env", "approle_role_id",
        "approle_secret_id_env", "approle_mount", "namespace", "ca_cert", "timeout_seconds",
    }),
}
_TOP_KEYS = frozenset({"data_dir", "regions", "keys", "banks", "http", "worker", "egress",
                       "rate_limits", "erasure"})
_REGION_KEYS = frozenset({"database_url", "keys", "plaid"})
_PLAID_KEYS = frozenset({
    "client_id", "secret_env", "secret_vault_path", "secret_vault_mount",
    "secret_vault_field", "environment", "host", "products", "country_codes", "daily_budget",
})
_PLAID_PRODUCT = re.compile(r"^[a-z_]{1,40}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True, slots=True)
class RegionSettings:
    """Everything that pins one region: its database and its key-encryption key."""

    name: str
    database_url: str
    keys: ProviderConfig
    #: How the region reaches Plaid, if it links through Plaid at all.
    plaid: PlaidRegion | None = None
    #: How often the worker rotates the region's KEK (``keys.rotate_every``); None: never.
    rotate_every: timedelta | None = None


@dataclass(frozen=True, slots=True)
class VaultSecretRef:
    """A secret in a Vault/OpenBao KV v2 engine: ``mount``, ``path`` and the ``field``."""

    mount: str
    path: str
    field: str


@dataclass(frozen=True, slots=True)
class PlaidRegion:
    """One region's Plaid credentials (``config``) and the budget its webhooks spend.

    With ``vault_secret`` the secret lives in Vault: ``config.secret`` is empty until
    :func:`aggregator.plaid.wiring.attach_plaid` reads it at start-up.
    """

    config: PlaidConfig
    sync_policy: SyncPolicy
    vault_secret: VaultSecretRef | None = None


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """``[worker]``: what the background jobs of ``aggregator worker`` are tuned by."""

    #: Days before a consent ends that ``connection.consent_expiring`` is sent (once).
    consent_warning_days: int = 7


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One token bucket: ``capacity`` requests at once, refilled at ``refill_per_second``."""

    capacity: int
    refill_per_second: float


#: Route classes and their default buckets (:mod:`aggregator.http.ratelimit.policy`).
DEFAULT_RATE_LIMITS: Mapping[str, RateLimit] = {
    "read": RateLimit(300, 50.0),  # GETs of the data API, per application
    "write": RateLimit(60, 10.0),  # POST/PUT/DELETE of the API, per application
    "link": RateLimit(30, 0.5),  # the hosted Link page and the OAuth callback, per client IP
    "unauthenticated": RateLimit(20, 0.2),  # /v1 answers of 401, per client IP
}
RATE_LIMIT_BACKENDS = ("database", "redis", "memory")
IPNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """``[rate_limits]``: buckets per route class, their store, and the trusted proxies.

    ``memory`` keeps buckets in one process's memory: a development option only, refused
    with a PostgreSQL region (several gateway processes would each grant the full budget).
    """

    enabled: bool = True
    backend: str = "database"
    classes: Mapping[str, RateLimit] = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    #: Per-application overrides: application id -> class -> bucket.
    applications: Mapping[str, Mapping[str, RateLimit]] = field(default_factory=dict)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    redis_url: str | None = None
    redis_password: Secret | None = None
    redis_key_prefix: str = "aggregator:rl:"


@dataclass(frozen=True, slots=True)
class Settings:
    """The gateway's whole configuration, validated."""

    data_dir: Path
    regions: Mapping[str, RegionSettings]
    key_cache_ttl: float = 300.0
    key_cache_size: int = 10_000
    bank_dirs: tuple[Path, ...] = ()
    #: The gateway's external base URL (``[http] public_url``), without a trailing slash;
    #: ``None`` means "the base URL of each request", right only without a proxy.
    public_url: str | None = None
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    #: ``[erasure] deadline_days``: a new erasure request's deadline (GDPR Art. 12(3)).
    erasure_deadline_days: int = 30
    source: str = "defaults"
    extra: Mapping[str, Any] = field(default_factory=dict)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    #: The outbound policy every httpx client of the process is built with (``[egress]``).
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    def region(self, name: str) -> RegionSettings:
        try:
            return self.regions[name]
        except KeyError:
            known = ", ".join(sorted(self.regions))
            raise ConfigError(f"unknown region {name!r}; configured regions: {known}") from None


def load_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from ``path`` (or $AGGREGATOR_CONFIG, or ./aggregator.toml) and env."""
    env = os.environ if environ is None else environ
    if path is None and env.get("AGGREGATOR_CONFIG"):
        path = Path(env["AGGREGATOR_CONFIG"])
    if path is None and Path("aggregator.toml").is_file():
        path = Path("aggregator.toml")
    source = str(path) if path else "defaults"
    raw = _with_global_env(_read_toml(path) if path else {}, env, source)
    _reject_unknown(raw, _TOP_KEYS, source, "")
    data_dir = Path(env.get("AGGREGATOR_DATA_DIR") or raw.get("data_dir") or "var")
    raw_regions = _mapping(raw.get("regions", {}), source, "regions")
    names = _region_names(env, raw_regions, source)
    keys = _mapping(raw.get("keys", {}), source, "keys")
    _reject_unknown(keys, frozenset({"cache_ttl_seconds", "cache_size", "rotate_every"}),
                    source, "keys.")
    rotate_every = _rotate_every(keys.get("rotate_every"), _where(source, env, "keys",
                                                                  "rotate_every"))
    regions = {
        name: _region(name, _with_env(name, raw_regions.get(name, {}), env, source),
                      data_dir, env, source, rotate_every)
        for name in names
    }
    erasure = _mapping(raw.get("erasure", {}), source, "erasure")
    _reject_unknown(erasure, frozenset({"deadline_days"}), source, "erasure.")
    banks = _mapping(raw.get("banks", {}), source, "banks")
    _reject_unknown(banks, frozenset({"directories"}), source, "banks.")
    http = _mapping(raw.get("http", {}), source, "http")
    _reject_unknown(http, frozenset({"public_url"}), source, "http.")
    public_url = _public_url(
        env.get("AGGREGATOR_PUBLIC_URL") or http.get("public_url"),
        "AGGREGATOR_PUBLIC_URL" if env.get("AGGREGATOR_PUBLIC_URL")
        else f"{source}: http.public_url",
    )
    plaid_regions = [r.name for r in regions.values() if r.plaid is not None]
    if plaid_regions and public_url is None:
        raise ConfigError(
            f"{source}: regions.{plaid_regions[0]}.plaid needs http.public_url "
            "(or AGGREGATOR_PUBLIC_URL): Plaid's webhooks are sent there"
        )
    return Settings(
        data_dir=data_dir,
        regions=regions,
        key_cache_ttl=_number(keys.get("cache_ttl_seconds", 300), source, "keys.cache_ttl_seconds"),
        key_cache_size=int(_number(keys.get("cache_size", 10_000), source, "keys.cache_size")),
        bank_dirs=tuple(Path(p) for p in banks.get("directories", [])),
        public_url=public_url,
        rate_limits=_rate_limits(
            _mapping(raw.get("rate_limits", {}), source, "rate_limits"), regions, env, source
        ),
        erasure_deadline_days=_whole_days(
            erasure.get("deadline_days", 30), _where(source, env, "erasure", "deadline_days")),
        source=source,
        worker=_worker(_mapping(raw.get("worker", {}), source, "worker"), env, source),
        egress=_egress(_mapping(raw.get("egress", {}), source, "egress"), env, source),
    )


def _worker(raw: Mapping[str, Any], env: Mapping[str, str], source: str) -> WorkerSettings:
    _reject_unknown(raw, frozenset(WORKER_ENV.values()), source, "worker.")
    values: dict[str, tuple[Any, str]] = {
        key: (value, f"{source}: worker.{key}") for key, value in raw.items()
    }
    for var, key in WORKER_ENV.items():
        if env.get(var):
            values[key] = (env[var], var)
    days, where = values.get("consent_warning_days", (7, ""))
    return WorkerSettings(consent_warning_days=_days(days, where, maximum=90))


def _days(value: Any, where: str, *, maximum: int) -> int:
    """A whole number of days, 1..``maximum``; env values arrive as text."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(f"{where} must be a whole number of days from 1 to {maximum}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: settings file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _region_names(env: Mapping[str, str], raw: Mapping[str, Any], source: str) -> list[str]:
    listed = env.get("AGGREGATOR_REGIONS")
    names = [n.strip() for n in listed.split(",") if n.strip()] if listed else (
        list(raw) or list(DEFAULT_REGIONS)
    )
    where = "AGGREGATOR_REGIONS" if listed else f"{source}: regions"
    for name in names:
        if not REGION_NAME.match(name):
            raise ConfigError(f"{where}: region name {name!r} must be 2-8 lowercase letters")
    if not names:
        raise ConfigError(f"{where}: at least one region must be configured")
    return names


def _with_env(
    name: str, raw: Mapping[str, Any], env: Mapping[str, str], source: str
) -> dict[str, Any]:
    region = dict(_mapping(raw, source, f"regions.{name}"))
    region["keys"] = dict(_mapping(region.get("keys", {}), source, f"regions.{name}.keys"))
    if "plaid" in region or any(v.startswith(f"AGGREGATOR_REGION_{name.upper()}_PLAID_")
                                for v in env):
        region["plaid"] = dict(_mapping(region.get("plaid", {}), source,
                                        f"regions.{name}.plaid"))
    prefix = f"AGGREGATOR_REGION_{name.upper()}_"
    for var, value in env.items():
        if not var.startswith(prefix):
            continue
        target = ENV_SETTINGS.get(var[len(prefix):])
        if target is None:
            raise ConfigError(f"{var}: unknown setting; known: {', '.join(ENV_SETTINGS)}")
        node = region
        for part in target[:-1]:
            node = node[part]
        node[target[-1]] = value
    return region


def _with_global_env(
    raw: dict[str, Any], env: Mapping[str, str], source: str
) -> dict[str, Any]:
    for var, path in GLOBAL_ENV_SETTINGS.items():
        if var not in env:
            continue
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            node[part] = child = dict(_mapping(child, source, part))
            node = child
        value: Any = env[var]
        if path[-1] == "trusted_proxies":
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif path[-1] == "enabled":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ConfigError(f"{var}: {value!r} is not true or false")
            value = value.lower() in ("true", "1")
        node[path[-1]] = value
    return raw


def _rate_limits(
    raw: Mapping[str, Any], regions: Mapping[str, RegionSettings], env: Mapping[str, str],
    source: str,
) -> RateLimitSettings:
    _reject_unknown(raw, frozenset({"enabled", "backend", "classes", "applications",
                                    "trusted_proxies", "redis"}), source, "rate_limits.")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{source}: rate_limits.enabled must be true or false")
    backend = raw.get("backend", "database")
    if backend not in RATE_LIMIT_BACKENDS:
        raise ConfigError(f"{source}: rate_limits.backend: {backend!r} is not one of "
                          + ", ".join(RATE_LIMIT_BACKENDS))
    if backend == "memory" and any(
        not r.database_url.startswith("sqlite") for r in regions.values()
    ):
        raise ConfigError(f"{source}: rate_limits.backend 'memory' counts per process; with "
                          "PostgreSQL regions several gateways run: use database or redis")
    classes = dict(DEFAULT_RATE_LIMITS)
    classes.update(_buckets(raw.get("classes", {}), source, "rate_limits.classes"))
    apps = {
        app: _buckets(table, source, f"rate_limits.applications.{app}")
        for app, table in _mapping(raw.get("applications", {}), source,
                                   "rate_limits.applications").items()
    }
    redis = _mapping(raw.get("redis", {}), source, "rate_limits.redis")
    _reject_unknown(redis, frozenset({"url", "password_env", "key_prefix"}), source,
                    "rate_limits.redis.")
    url, password = redis.get("url"), None
    if backend == "redis":
        url = _redis_url(url, source)
        if redis.get("password_env"):
            value = env.get(str(redis["password_env"]))
            if not value:
                raise ConfigError(f"{source}: rate_limits.redis.password_env names "
                                  f"${redis['password_env']}, which is not set")
            password = Secret(value)
    return RateLimitSettings(
        enabled=enabled, backend=backend, classes=classes, applications=apps,
        trusted_proxies=_networks(raw.get("trusted_proxies", []), source),
        redis_url=url, redis_password=password,
        redis_key_prefix=str(redis.get("key_prefix", "aggregator:rl:")),
    )


def _buckets(raw: Any, source: str, where: str) -> dict[str, RateLimit]:
    out = {}
    for name, table in _mapping(raw, source, where).items():
        if name not in DEFAULT_RATE_LIMITS:
            raise ConfigError(f"{source}: unknown route class {where}.{name}; expected one "
                              "of: " + ", ".join(DEFAULT_RATE_LIMITS))
        table = _mapping(table, source, f"{where}.{name}")
        _reject_unknown(table, frozenset({"capacity", "refill_per_second"}), source,
                        f"{where}.{name}.")
        capacity = _number(table.get("capacity"), source, f"{where}.{name}.capacity")
        if capacity != int(capacity):
            raise ConfigError(f"{source}: {where}.{name}.capacity must be a whole number")
        refill = _number(table.get("refill_per_second"), source,
                         f"{where}.{name}.refill_per_second")
        out[name] = RateLimit(int(capacity), refill)
    return out


def _networks(raw: Any, source: str) -> tuple[IPNetwork, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: rate_limits.trusted_proxies must be a list of networks")
    try:
        return tuple(ip_network(str(item), strict=False) for item in raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: rate_limits.trusted_proxies: {exc}") from None


def _redis_url(value: Any, source: str) -> str:
    where = f"{source}: rate_limits.redis.url"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} is required for backend 'redis'")
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ConfigError(f"{where}: {value.split('@')[-1]!r} is not a redis:// URL")
    if parts.password is not None:
        # A password here would sit in a file and in process listings: name it instead.
        raise ConfigError(f"{where} must not carry a password; use password_env")
    return value


def _region(
    name: str, raw: Mapping[str, Any], data_dir: Path, env: Mapping[str, str], source: str,
    rotate_every: timedelta | None,
) -> RegionSettings:
    _reject_unknown(raw, _REGION_KEYS, source, f"regions.{name}.")
    url = raw.get("database_url") or f"sqlite+aiosqlite:///{data_dir / f'{name}.sqlite3'}"
    raw_keys = dict(raw["keys"])
    if "rotate_every" in raw_keys:
        var = f"AGGREGATOR_REGION_{name.upper()}_KEYS_ROTATE_EVERY"
        where = var if var in env else f"{source}: regions.{name}.keys.rotate_every"
        rotate_every = _rotate_every(raw_keys.pop("rotate_every"), where)
    keys = _keys(name, raw_keys, data_dir, env, source)
    plaid = _plaid(name, raw["plaid"], env, source) if "plaid" in raw else None
    if plaid is not None and plaid.vault_secret is not None and not isinstance(
            keys, TransitConfig):
        raise ConfigError(f"{source}: regions.{name}.plaid.secret_vault_path reads the secret "
                          f"through the region's Vault; set regions.{name}.keys.provider = "
                          "\"transit\" or use secret_env")
    return RegionSettings(name, str(url), keys, plaid, rotate_every)


def _plaid(region: str, raw: Mapping[str, Any], env: Mapping[str, str], source: str
           ) -> PlaidRegion:
    """``[regions.<name>.plaid]``: each region has its own Plaid credentials (residency)."""
    where = f"{source}: regions.{region}.plaid"
    _reject_unknown(raw, _PLAID_KEYS, source, f"regions.{region}.plaid.")
    client_id = raw.get("client_id")
    if not client_id or not isinstance(client_id, str):
        raise ConfigError(f"{where}.client_id is required")
    secret, vault = _plaid_secret(raw, env, where)
    try:
        environment = PlaidEnvironment(str(raw.get("environment", "sandbox")).lower())
    except ValueError:
        raise ConfigError(f"{where}.environment must be sandbox or production") from None
    host = raw.get("host")
    if host is not None and not _plaid_host(host):
        raise ConfigError(f"{where}.host must be an https URL (http only on loopback)")
    products = _names(raw.get("products", ["transactions"]), str.lower, _PLAID_PRODUCT)
    countries = _names(raw.get("country_codes", ["US"]), str.upper, _COUNTRY)
    if products is None:
        raise ConfigError(f"{where}.products must list Plaid product names")
    if countries is None:
        raise ConfigError(f"{where}.country_codes must list ISO 3166-1 alpha-2 codes")
    budget = raw.get("daily_budget", SyncPolicy().daily_budget)
    if isinstance(budget, str) and budget.strip().isdigit():
        budget = int(budget)  # from the environment
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"{where}.daily_budget must be a positive whole number")
    policy = SyncPolicy(daily_budget=budget)
    config = PlaidConfig(region, client_id, secret, environment,
                         host.rstrip("/") if host else None, products, countries)
    return PlaidRegion(config, policy, vault)


def _plaid_secret(raw: Mapping[str, Any], env: Mapping[str, str], where: str
                  ) -> tuple[Secret, VaultSecretRef | None]:
    """The secret from the variable ``secret_env`` names, or a reference into Vault."""
    secret_env, path = raw.get("secret_env"), raw.get("secret_vault_path")
    if bool(secret_env) == bool(path):
        raise ConfigError(f"{where}: set exactly one of secret_env (the variable holding "
                          "the secret) and secret_vault_path (a KV v2 secret in Vault)")
    if path:
        mount = raw.get("secret_vault_mount") or "secret"
        field = raw.get("secret_vault_field") or "secret"
        if not all(isinstance(v, str) for v in (path, mount, field)):
            raise ConfigError(f"{where}: secret_vault_* must be strings")
        return Secret(""), VaultSecretRef(str(mount), str(path).strip("/"), str(field))
    value = env.get(str(secret_env))
    if not value:
        raise ConfigError(f"{where}.secret_env names ${secret_env}, which is not set")
    return Secret(value), None


def _names(value: Any, case: Any, pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """A TOML list, or a comma-separated string from the environment, all matching."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return None
    names = tuple(case(str(i).strip()) for i in items if str(i).strip())
    return names if names and all(pattern.match(n) for n in names) else None


def _plaid_host(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if not parts.hostname or parts.username is not None or parts.query or parts.fragment:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname))


def _keys(
    region: str, raw: Mapping[str, Any], data_dir: Path, env: Mapping[str, str], source: str
) -> ProviderConfig:
    where = f"regions.{region}.keys"
    kind = raw.get("provider", "local")
    if kind not in _PROVIDER_KEYS:
        raise ConfigError(
            f"{source}: {where}.provider: {kind!r} is not one of local, pkcs11, transit"
        )
    _reject_unknown(raw, _PROVIDER_KEYS[kind], source, f"{where}.")

    def need(key: str) -> str:
        value = raw.get(key)
        if not value:
            raise ConfigError(f"{source}: {where}.{key} is required for provider {kind!r}")
        return str(value)

    def secret(key: str) -> Secret | None:
        var = raw.get(key)
        if not var:
            return None
        value = env.get(str(var))
        if not value:
            raise ConfigError(f"{source}: {where}.{key} names ${var}, which is not set")
        return Secret(value)

    if kind == "local":
        directory = Path(raw.get("directory") or data_dir / "keys")
        return LocalKeyringConfig(directory=directory, kek_id=str(raw.get("kek_id", region)))
    if kind == "pkcs11":
        pin = secret("pin_env")
        if pin is None:
            raise ConfigError(f"{source}: {where}.pin_env is required for provider 'pkcs11'")
        return Pkcs11Config(
            module=Path(need("module")), token_label=need("token_label"), pin=pin,
            kek_label=str(raw.get("kek_label", f"aggregator-{region}")),
        )
    token, secret_id = secret("token_env"), secret("approle_secret_id_env")
    role_id = raw.get("approle_role_id")
    if token is None and not (role_id and secret_id):
        raise ConfigError(
            f"{source}: {where}: set token_env, or approle_role_id and approle_secret_id_env"
        )
    return TransitConfig(
        url=need("url"), key_name=str(raw.get("key_name", f"aggregator-{region}")),
        mount=str(raw.get("mount", "transit")), token=token,
        approle_role_id=str(role_id) if role_id else None, approle_secret_id=secret_id,
        approle_mount=str(raw.get("approle_mount", "approle")),
        namespace=raw.get("namespace"), verify=str(raw["ca_cert"]) if raw.get("ca_cert") else True,
        timeout=_number(raw.get("timeout_seconds", 5.0), source, f"{where}.timeout_seconds"),
    )


def _egress(raw: Mapping[str, Any], env: Mapping[str, str], source: str) -> EgressPolicy:
    """The ``[egress]`` table with its environment overrides, as an :class:`EgressPolicy`."""
    _reject_unknown(raw, frozenset(ENV_EGRESS.values()), source, "egress.")
    values = {k: (v, f"{source}: egress.{k}") for k, v in raw.items()}
    for var, key in ENV_EGRESS.items():
        if var in env:
            values[key] = (_env_value(key, env[var], var), var)

    def get(key: str, default: Any) -> tuple[Any, str]:
        return values.get(key, (default, f"{source}: egress.{key}"))

    def number(key: str, default: float) -> float:
        value, where = get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where} must be a positive number")
        return float(value)

    flag, where = get("allow_http_loopback", False)
    if not isinstance(flag, bool):
        raise ConfigError(f"{where} must be a boolean")
    lists = {key: get(key, []) for key in ("allowed_networks", "allowed_hosts")}
    for value, where in lists.values():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
    networks, where = lists["allowed_networks"]
    try:
        parsed = tuple(ip_network(n, strict=True) for n in networks)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return EgressPolicy(
        allow_http_loopback=flag, allowed_networks=parsed,
        allowed_hosts=frozenset(lists["allowed_hosts"][0]),
        max_response_bytes=int(number("max_response_bytes", 10 * 1024 * 1024)),
        timeout=number("timeout_seconds", 10.0),
        connect_timeout=number("connect_timeout_seconds", 5.0),
        total_timeout=number("total_timeout_seconds", 30.0),
    )


def _env_value(key: str, text: str, var: str) -> Any:
    if key.startswith("allowed_"):
        return [part.strip() for part in text.split(",") if part.strip()]
    if key.startswith("allow_"):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{var} must be true or false, not {text!r}")
        return text.lower() in ("true", "1")
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{var} must be a number, not {text!r}") from None


def _where(source: str, env: Mapping[str, str], table: str, key: str) -> str:
    """The name an error gives a global setting: its variable when that set it."""
    for var, path in GLOBAL_ENV_SETTINGS.items():
        if path == (table, key) and var in env:
            return var
    return f"{source}: {table}.{key}"


def _rotate_every(value: Any, where: str) -> timedelta | None:
    """A strict duration: "90d", "12h", "2w", or "off" (no scheduled rotation)."""
    if value is None or value == "off":
        return None
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f"{where}: {value!r} is not a duration; write a whole number of hours, days "
            'or weeks such as "90d", "36h", "2w", or "off"'
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def _whole_days(value: Any, where: str) -> int:
    from_env = where in GLOBAL_ENV_SETTINGS
    if from_env and isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # the environment holds text; the file must hold a number
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3650:
        raise ConfigError(f"{where}: {value!r} must be a whole number of days, 1 to 3650")
    return value


def _public_url(value: Any, where: str) -> str | None:
    """Validate the external base URL that OAuth callbacks and Link URLs are built on.

    Banks send authorization codes to it, so it must be https (RFC 6749 §3.1.2.1); plain
    http is allowed only on loopback, where nothing crosses a network (RFC 8252 §7.3).
    Userinfo, a query or a fragment would be copied into every callback URL: refused.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port outside 0-65535 raises ValueError
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {value!r} must be an absolute http(s) URL")
    if parts.username is not None or "?" in value or "#" in value:
        raise ConfigError(f"{where}: {value!r} must not carry userinfo, a query or a fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"{where}: {value!r} must use https (http only on loopback)")
    return value.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _mapping(value: Any, source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {where} must be a table")
    return value


def _number(value: Any, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{source}: {where} must be a positive number")
    return float(value)


def _reject_unknown(raw: Mapping[str, Any], known: frozenset[str], source: str, where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting {where}{unknown[0]}; expected one of: "
            + ", ".join(sorted(known))
        )
