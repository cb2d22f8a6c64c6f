"""``[rate_limits]``: token buckets per route class, their store, and the trusted proxies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any
from urllib.parse import urlsplit

from aggregator.errors import ConfigError
from aggregator.settings.values import mapping, number, reject_unknown
from vault import Secret


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


def rate_limit_settings(raw: Mapping[str, Any], database_urls: Iterable[str],
                        env: Mapping[str, str], source: str) -> RateLimitSettings:
    reject_unknown(raw, frozenset({"enabled", "backend", "classes", "applications",
                                   "trusted_proxies", "redis"}), source, "rate_limits.")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{source}: rate_limits.enabled must be true or false")
    backend = raw.get("backend", "database")
    if backend not in RATE_LIMIT_BACKENDS:
        raise ConfigError(f"{source}: rate_limits.backend: {backend!r} is not one of "
                          + ", ".join(RATE_LIMIT_BACKENDS))
    if backend == "memory" and any(not url.startswith("sqlite") for url in database_urls):
        raise ConfigError(f"{source}: rate_limits.backend 'memory' counts per process; with "
                          "PostgreSQL regions several gateways run: use database or redis")
    classes = dict(DEFAULT_RATE_LIMITS)
    classes.update(_buckets(raw.get("classes", {}), source, "rate_limits.classes"))
    apps = {
        app: _buckets(table, source, f"rate_limits.applications.{app}")
        for app, table in mapping(raw.get("applications", {}), source,
                                  "rate_limits.applications").items()
    }
    redis = mapping(raw.get("redis", {}), source, "rate_limits.redis")
    reject_unknown(redis, frozenset({"url", "password_env", "key_prefix"}), source,
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
    for name, table in mapping(raw, source, where).items():
        if name not in DEFAULT_RATE_LIMITS:
            raise ConfigError(f"{source}: unknown route class {where}.{name}; expected one "
                              "of: " + ", ".join(DEFAULT_RATE_LIMITS))
        table = mapping(table, source, f"{where}.{name}")
        reject_unknown(table, frozenset({"capacity", "refill_per_second"}), source,
                       f"{where}.{name}.")
        capacity = number(table.get("capacity"), source, f"{where}.{name}.capacity")
        if capacity != int(capacity):
            raise ConfigError(f"{source}: {where}.{name}.capacity must be a whole number")
        refill = number(table.get("refill_per_second"), source,
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
