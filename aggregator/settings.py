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


    [regions.eu]
    database_url = "postgresql+psycopg://gateway@db-eu/gateway"
    [regions.eu.keys]
    provider = "transit"                 # local | pkcs11 | transit
    rotate_every = "30d"                 # this region's own period ("off": never)
    url = "https://vault.eu.internal:8200"
    key_name = "aggregator-eu"
    token_env = "VAULT_TOKEN_EU"         # secrets are named, never written here

Environment overrides (the one place they are mapped, see :data:`ENV_SETTINGS` and
:data:`ENV_GLOBAL`):
``AGGREGATOR_DATA_DIR``, ``AGGREGATOR_PUBLIC_URL``, ``AGGREGATOR_REGIONS=eu,us`` (which
regions run), those in :data:`ENV_GLOBAL` (e.g. ``AGGREGATOR_ERASURE_DEADLINE_DAYS``), and
``AGGREGATOR_REGION_<NAME>_<SETTING>`` for each per-region setting, e.g.
``AGGREGATOR_REGION_EU_DATABASE_URL`` or ``AGGREGATOR_REGION_EU_KEYS_PROVIDER``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aggregator.errors import ConfigError
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
}

#: Settings outside any region that an environment variable may override: variable →
#: path in the TOML file. The value is validated exactly as the file's would be.
ENV_GLOBAL: Mapping[str, tuple[str, ...]] = {
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
_TOP_KEYS = frozenset({"data_dir", "regions", "keys", "banks", "http", "erasure"})
_REGION_KEYS = frozenset({"database_url", "keys"})


@dataclass(frozen=True, slots=True)
class RegionSettings:
    """Everything that pins one region: its database and its key-encryption key."""

    name: str
    database_url: str
    keys: ProviderConfig
    #: How often the worker rotates the region's KEK (``keys.rotate_every``); None: never.
    rotate_every: timedelta | None = None


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
    #: ``[erasure] deadline_days``: a new erasure request's deadline (GDPR Art. 12(3)).
    erasure_deadline_days: int = 30
    source: str = "defaults"
    extra: Mapping[str, Any] = field(default_factory=dict)

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
    return Settings(
        data_dir=data_dir,
        regions=regions,
        key_cache_ttl=_number(keys.get("cache_ttl_seconds", 300), source, "keys.cache_ttl_seconds"),
        key_cache_size=int(_number(keys.get("cache_size", 10_000), source, "keys.cache_size")),
        bank_dirs=tuple(Path(p) for p in banks.get("directories", [])),
        public_url=public_url,
        erasure_deadline_days=_whole_days(
            erasure.get("deadline_days", 30), _where(source, env, "erasure", "deadline_days")),
        source=source,
    )


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


def _region(
    name: str, raw: Mapping[str, Any], data_dir: Path, env: Mapping[str, str], source: str,
    rotate_every: timedelta | None,
) -> RegionSettings:
    _reject_unknown(raw, _REGION_KEYS, source, f"regions.{name}.")
    url = raw.get("database_url") or f"sqlite+aiosqlite:///{data_dir / f'{name}.sqlite3'}"
    keys = dict(raw["keys"])
    if "rotate_every" in keys:
        var = f"AGGREGATOR_REGION_{name.upper()}_KEYS_ROTATE_EVERY"
        where = var if var in env else f"{source}: regions.{name}.keys.rotate_every"
        rotate_every = _rotate_every(keys.pop("rotate_every"), where)
    return RegionSettings(name, str(url), _keys(name, keys, data_dir, env, source),
                          rotate_every)


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


def _with_global_env(
    raw: Mapping[str, Any], env: Mapping[str, str], source: str
) -> dict[str, Any]:
    out = dict(raw)
    for var, (table, key) in ENV_GLOBAL.items():
        if var in env:
            out[table] = {**_mapping(out.get(table, {}), source, table), key: env[var]}
    return out


def _where(source: str, env: Mapping[str, str], table: str, key: str) -> str:
    """The name an error gives a global setting: its variable when that set it."""
    for var, path in ENV_GLOBAL.items():
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
    if where in ENV_GLOBAL and isinstance(value, str) and value.isascii() and value.isdigit():
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
