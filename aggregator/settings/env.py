"""The one place environment variables are mapped onto the settings tree.

Each variable names a path in the TOML tree and a kind; :func:`overlay` converts the text
of every variable that is set and writes it over the file's value, so each section
validates one tree, whichever source a value came from. :class:`Origins` remembers which
variable set which path, so an error names the variable the operator has to fix rather
than a file key they never wrote.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aggregator.errors import ConfigError

#: ``text`` as given; ``flag`` true/false/1/0; ``list`` comma-separated, items stripped;
#: ``whole`` a non-negative whole number; ``number`` a decimal number.
Kind = Literal["text", "flag", "list", "whole", "number"]

#: Settings outside any region: variable -> (path in the TOML tree, kind).
ENV_VARIABLES: Mapping[str, tuple[tuple[str, ...], Kind]] = {
    "AGGREGATOR_DATA_DIR": (("data_dir",), "text"),
    "AGGREGATOR_PUBLIC_URL": (("http", "public_url"), "text"),
    "AGGREGATOR_BANKS_SANDBOX": (("banks", "sandbox"), "flag"),
    "AGGREGATOR_KEYS_ROTATE_EVERY": (("keys", "rotate_every"), "text"),
    "AGGREGATOR_ERASURE_DEADLINE_DAYS": (("erasure", "deadline_days"), "whole"),
    "AGGREGATOR_ERASURE_REVOKE_PER_BANK": (("erasure", "revoke_per_bank"), "whole"),
    "AGGREGATOR_ERASURE_REVOKE_CONCURRENCY": (("erasure", "revoke_concurrency"), "whole"),
    "AGGREGATOR_WORKER_CONSENT_WARNING_DAYS": (("worker", "consent_warning_days"), "whole"),
    "AGGREGATOR_RATE_LIMITS_ENABLED": (("rate_limits", "enabled"), "flag"),
    "AGGREGATOR_RATE_LIMITS_BACKEND": (("rate_limits", "backend"), "text"),
    "AGGREGATOR_RATE_LIMITS_REDIS_URL": (("rate_limits", "redis", "url"), "text"),
    "AGGREGATOR_RATE_LIMITS_TRUSTED_PROXIES": (("rate_limits", "trusted_proxies"), "list"),
    "AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK": (("egress", "allow_http_loopback"), "flag"),
    "AGGREGATOR_EGRESS_ALLOWED_NETWORKS": (("egress", "allowed_networks"), "list"),
    "AGGREGATOR_EGRESS_ALLOWED_HOSTS": (("egress", "allowed_hosts"), "list"),
    "AGGREGATOR_EGRESS_MAX_RESPONSE_BYTES": (("egress", "max_response_bytes"), "number"),
    "AGGREGATOR_EGRESS_TIMEOUT_SECONDS": (("egress", "timeout_seconds"), "number"),
    "AGGREGATOR_EGRESS_CONNECT_TIMEOUT_SECONDS": (("egress", "connect_timeout_seconds"),
                                                  "number"),
    "AGGREGATOR_EGRESS_TOTAL_TIMEOUT_SECONDS": (("egress", "total_timeout_seconds"), "number"),
}

#: Variables whose empty value has always meant "unset" (kept so: deployments template
#: them as ``VAR=${VAR:-}``). Any other variable that is present applies even when empty:
#: an empty list clears the file's list, an empty required value is refused at start-up.
EMPTY_IS_UNSET = frozenset({
    "AGGREGATOR_DATA_DIR", "AGGREGATOR_PUBLIC_URL", "AGGREGATOR_WORKER_CONSENT_WARNING_DAYS",
})

#: The settings file (else ``./aggregator.toml`` if present, else defaults only).
CONFIG_VARIABLE = "AGGREGATOR_CONFIG"
#: Which regions run (a comma-separated list); not a path: it picks the keys of [regions].
REGIONS_VARIABLE = "AGGREGATOR_REGIONS"
#: Per-region settings: ``AGGREGATOR_REGION_<NAME>_<SUFFIX>`` -> path under
#: ``[regions.<name>]`` and kind.
REGION_PREFIX = "AGGREGATOR_REGION_"
REGION_ENV_VARIABLES: Mapping[str, tuple[tuple[str, ...], Kind]] = {
    "DATABASE_URL": (("database_url",), "text"),
    "KEYS_PROVIDER": (("keys", "provider"), "text"),
    "KEYS_DIRECTORY": (("keys", "directory"), "text"),
    "KEYS_KEK_ID": (("keys", "kek_id"), "text"),
    "KEYS_MODULE": (("keys", "module"), "text"),
    "KEYS_TOKEN_LABEL": (("keys", "token_label"), "text"),
    "KEYS_PIN_ENV": (("keys", "pin_env"), "text"),
    "KEYS_KEK_LABEL": (("keys", "kek_label"), "text"),
    "KEYS_URL": (("keys", "url"), "text"),
    "KEYS_KEY_NAME": (("keys", "key_name"), "text"),
    "KEYS_MOUNT": (("keys", "mount"), "text"),
    "KEYS_TOKEN_ENV": (("keys", "token_env"), "text"),
    "KEYS_APPROLE_ROLE_ID": (("keys", "approle_role_id"), "text"),
    "KEYS_APPROLE_SECRET_ID_ENV": (("keys", "approle_secret_id_env"), "text"),
    "KEYS_NAMESPACE": (("keys", "namespace"), "text"),
    "KEYS_CA_CERT": (("keys", "ca_cert"), "text"),
    "KEYS_ROTATE_EVERY": (("keys", "rotate_every"), "text"),
    "PLAID_CLIENT_ID": (("plaid", "client_id"), "text"),
    "PLAID_SECRET_ENV": (("plaid", "secret_env"), "text"),
    "PLAID_SECRET_VAULT_PATH": (("plaid", "secret_vault_path"), "text"),
    "PLAID_SECRET_VAULT_MOUNT": (("plaid", "secret_vault_mount"), "text"),
    "PLAID_SECRET_VAULT_FIELD": (("plaid", "secret_vault_field"), "text"),
    "PLAID_ENVIRONMENT": (("plaid", "environment"), "text"),
    "PLAID_HOST": (("plaid", "host"), "text"),
    "PLAID_PRODUCTS": (("plaid", "products"), "list"),
    "PLAID_COUNTRY_CODES": (("plaid", "country_codes"), "list"),
    "PLAID_DAILY_BUDGET": (("plaid", "daily_budget"), "whole"),
    "PLAID_WEBHOOK_KEY_RECHECK": (("plaid", "webhook_key_recheck"), "whole"),
}

_WHOLE = re.compile(r"^[0-9]{1,12}$")


def env_value(var: str, text: str, kind: Kind) -> Any:
    """Convert one variable's text to what the TOML file would hold for the same key.

    Every kind is converted here and nowhere else, so ``AGGREGATOR_X=10`` means what
    ``x = 10`` means in the file; the section then validates both alike.
    """
    if kind == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == "flag":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{var}: {text!r} is not true or false")
        return text.lower() in ("true", "1")
    if kind == "whole":
        # Other text is left for the section to refuse: it states the range it accepts.
        return int(text.strip()) if _WHOLE.match(text.strip()) else text
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):  # float() also reads "nan" and "inf"
            raise ConfigError(f"{var} must be a number, not {text!r}")
        return value
    return text


@dataclass(frozen=True, slots=True)
class Origins:
    """Where each value came from, so an error names what the operator wrote."""

    source: str
    variables: Mapping[tuple[str, ...], str]

    def of(self, *path: str) -> str:
        """The variable that set ``path``, or ``"<file>: a.b.c"``.

        Without a settings file nothing was written anywhere: name the key and the
        variable that would set it, rather than blame "defaults".
        """
        if path in self.variables:
            return self.variables[path]
        key = ".".join(path)
        if self.source == "defaults":
            var = variable_for(path)
            return f"{key} (no settings file{'; or ' + var if var else ''})"
        return f"{self.source}: {key}"


def variable_for(path: tuple[str, ...]) -> str | None:
    """The environment variable that sets ``path``, if there is one."""
    for var, (target, _) in ENV_VARIABLES.items():
        if target == path:
            return var
    if len(path) > 2 and path[0] == "regions":
        for suffix, (target, _) in REGION_ENV_VARIABLES.items():
            if target == path[2:]:
                return f"{REGION_PREFIX}{path[1].upper()}_{suffix}"
    return None


def overlay(raw: dict[str, Any], env: Mapping[str, str], source: str
            ) -> dict[tuple[str, ...], str]:
    """Write every set variable of :data:`ENV_VARIABLES` into ``raw``; return path -> var."""
    applied: dict[tuple[str, ...], str] = {}
    for var, (path, kind) in ENV_VARIABLES.items():
        if var in env and (env[var] or var not in EMPTY_IS_UNSET):
            _put(raw, path, env_value(var, env[var], kind), source)
            applied[path] = var
    return applied


def region_names(env: Mapping[str, str], configured: Iterable[str], source: str,
                 pattern: re.Pattern[str]) -> list[str]:
    """``AGGREGATOR_REGIONS`` if set and not empty, else the file's (or default) regions."""
    listed = env.get(REGIONS_VARIABLE)
    names = env_value(REGIONS_VARIABLE, listed, "list") if listed else list(configured)
    where = REGIONS_VARIABLE if listed else f"{source}: regions"
    for name in names:
        if not pattern.match(name):
            raise ConfigError(f"{where}: region name {name!r} must be 2-8 lowercase letters")
    if not names:
        raise ConfigError(f"{where}: at least one region must be configured")
    return names


def overlay_region(raw: dict[str, Any], name: str, env: Mapping[str, str], source: str
                   ) -> dict[tuple[str, ...], str]:
    """Write ``AGGREGATOR_REGION_<NAME>_*`` into ``raw["regions"][name]``.

    A variable with the region's prefix and an unknown suffix is refused: a typo would
    otherwise leave the file's value (or the default) in force without a word.
    """
    prefix = f"{REGION_PREFIX}{name.upper()}_"
    applied: dict[tuple[str, ...], str] = {}
    for var in sorted(v for v in env if v.startswith(prefix)):
        target = REGION_ENV_VARIABLES.get(var[len(prefix):])
        if target is None:
            raise ConfigError(
                f"{var}: unknown setting; known: {', '.join(REGION_ENV_VARIABLES)}")
        path = ("regions", name, *target[0])
        _put(raw, path, env_value(var, env[var], target[1]), source)
        applied[path] = var
    return applied


def _put(raw: dict[str, Any], path: tuple[str, ...], value: Any, source: str) -> None:
    node = raw
    for depth, part in enumerate(path[:-1]):
        child = node.get(part, {})
        if not isinstance(child, Mapping):
            raise ConfigError(f"{source}: {'.'.join(path[:depth + 1])} must be a table")
        node[part] = child = dict(child)
        node = child
    node[path[-1]] = value
