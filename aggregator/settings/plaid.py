"""``[regions.<name>.plaid]``: each region has its own Plaid credentials (data residency)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aggregator.errors import ConfigError
from aggregator.settings.values import is_loopback, reject_unknown
from connectors import PlaidConfig, PlaidEnvironment, SyncPolicy
from vault import Secret

_PLAID_KEYS = frozenset({
    "client_id", "secret_env", "secret_vault_path", "secret_vault_mount",
    "secret_vault_field", "environment", "host", "products", "country_codes", "daily_budget",
    "webhook_key_recheck",
})
#: Default and ceiling of ``webhook_key_recheck``: seconds a key Plaid has expired can
#: still verify webhooks (README, "Plaid webhooks: keys").
KEY_RECHECK_DEFAULT, KEY_RECHECK_MAX = 300, 3600
_PLAID_PRODUCT = re.compile(r"^[a-z_]{1,40}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


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
    #: Seconds after which a cached webhook key is re-checked with Plaid (the bound on
    #: trusting a key Plaid has expired).
    webhook_key_recheck: int = KEY_RECHECK_DEFAULT


def plaid_region(region: str, raw: Mapping[str, Any], env: Mapping[str, str], source: str
                 ) -> PlaidRegion:
    where = f"{source}: regions.{region}.plaid"
    reject_unknown(raw, _PLAID_KEYS, source, f"regions.{region}.plaid.")
    client_id = raw.get("client_id")
    if not client_id or not isinstance(client_id, str):
        raise ConfigError(f"{where}.client_id is required")
    secret, vault = _secret(raw, env, where)
    try:
        environment = PlaidEnvironment(str(raw.get("environment", "sandbox")).lower())
    except ValueError:
        raise ConfigError(f"{where}.environment must be sandbox or production") from None
    host = raw.get("host")
    if host is not None and not _host(host):
        raise ConfigError(f"{where}.host must be an https URL (http only on loopback)")
    products = _names(raw.get("products", ["transactions"]), str.lower, _PLAID_PRODUCT)
    countries = _names(raw.get("country_codes", ["US"]), str.upper, _COUNTRY)
    if products is None:
        raise ConfigError(f"{where}.products must list Plaid product names")
    if countries is None:
        raise ConfigError(f"{where}.country_codes must list ISO 3166-1 alpha-2 codes")
    budget = raw.get("daily_budget", SyncPolicy().daily_budget)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"{where}.daily_budget must be a positive whole number")
    recheck = raw.get("webhook_key_recheck", KEY_RECHECK_DEFAULT)
    if isinstance(recheck, bool) or not isinstance(recheck, int) or not (
            1 <= recheck <= KEY_RECHECK_MAX):
        raise ConfigError(f"{where}.webhook_key_recheck must be whole seconds from 1 to "
                          f"{KEY_RECHECK_MAX}")
    config = PlaidConfig(region, client_id, secret, environment,
                         host.rstrip("/") if host else None, products, countries)
    return PlaidRegion(config, SyncPolicy(daily_budget=budget), vault, recheck)


def _secret(raw: Mapping[str, Any], env: Mapping[str, str], where: str
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


def _names(value: Any, case: Callable[[str], str], pattern: re.Pattern[str]
           ) -> tuple[str, ...] | None:
    """A list (or one comma-separated string) of names, all matching ``pattern``."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return None
    names = tuple(case(str(i).strip()) for i in items if str(i).strip())
    return names if names and all(pattern.match(n) for n in names) else None


def _host(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if not parts.hostname or parts.username is not None or parts.query or parts.fragment:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname))
