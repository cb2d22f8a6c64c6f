"""``[regions.<name>]``: what pins one region: its database, its KEK, its Plaid client."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aggregator.errors import ConfigError
from aggregator.settings.env import Origins
from aggregator.settings.keys import provider, region_rotation
from aggregator.settings.plaid import PlaidRegion, plaid_region
from aggregator.settings.values import mapping, reject_unknown
from vault import ProviderConfig, TransitConfig

DEFAULT_REGIONS = ("eu", "us")
REGION_NAME = re.compile(r"^[a-z]{2,8}$")
_REGION_KEYS = frozenset({"database_url", "keys", "plaid"})


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


#: SQLAlchemy URL schemes the gateway runs on (async drivers), and the fix for common misses.
_DRIVERS = ("postgresql+psycopg", "sqlite+aiosqlite")
_FIXES = {
    "postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg", "postgresql+asyncpg": "postgresql+psycopg",
    "sqlite": "sqlite+aiosqlite",
}


def check_database_url(region: str, url: Any, where: str) -> None:
    """Refuse a URL the gateway cannot open, naming the region, the setting and the fix.

    ``postgres://…`` (Heroku's and libpq's spelling) is the usual one: SQLAlchemy needs a
    dialect and an async driver, ``postgresql+psycopg://…``.
    """
    if not isinstance(url, str):
        raise ConfigError(f"{where}: region {region}'s database URL must be text")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"{where}: region {region}'s database URL has no scheme; write "
                          "postgresql+psycopg://user@host/db or sqlite+aiosqlite:///path")
    if scheme in _DRIVERS:
        return
    fix = _FIXES.get(scheme)
    hint = (f"write {fix}://{'…' if rest else ''} instead of {scheme}://" if fix
            else "use postgresql+psycopg://user@host/db or sqlite+aiosqlite:///path")
    raise ConfigError(f"{where}: region {region}'s database URL scheme {scheme!r} is not "
                      f"supported: {hint}")


def region_settings(
    name: str, raw: Any, data_dir: Path, env: Mapping[str, str], origins: Origins,
    rotate_every: timedelta | None,
) -> RegionSettings:
    """One region; ``rotate_every`` is ``[keys]``'s period, which the region may override."""
    source = origins.source
    raw = mapping(raw, source, f"regions.{name}")
    reject_unknown(raw, _REGION_KEYS, source, f"regions.{name}.")
    url = raw.get("database_url") or f"sqlite+aiosqlite:///{data_dir / f'{name}.sqlite3'}"
    check_database_url(name, url, origins.of("regions", name, "database_url"))
    raw_keys = mapping(raw.get("keys", {}), source, f"regions.{name}.keys")
    raw_plaid = mapping(raw["plaid"], source, f"regions.{name}.plaid") if "plaid" in raw else None
    rotate_every = region_rotation(name, raw_keys, rotate_every, origins)
    keys = provider(name, raw_keys, data_dir, env, origins)
    plaid = None if raw_plaid is None else plaid_region(name, raw_plaid, env, source)
    if plaid is not None and plaid.vault_secret is not None and not isinstance(
            keys, TransitConfig):
        raise ConfigError(f"{source}: regions.{name}.plaid.secret_vault_path reads the secret "
                          f"through the region's Vault; set regions.{name}.keys.provider = "
                          "\"transit\" or use secret_env")
    return RegionSettings(name, str(url), keys, plaid, rotate_every)
