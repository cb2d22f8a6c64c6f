"""``[keys]`` and ``[regions.<name>.keys]``: each region's key provider and rotation period."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aggregator.errors import ConfigError
from aggregator.settings.env import Origins
from aggregator.settings.values import duration, number, reject_unknown
from vault import LocalKeyringConfig, Pkcs11Config, ProviderConfig, Secret, TransitConfig

_PROVIDER_KEYS: Mapping[str, frozenset[str]] = {
    "local": frozenset({"provider", "directory", "kek_id"}),
    "pkcs11": frozenset({"provider", "module", "token_label", "pin_env", "kek_label"}),
    "transit": frozenset({
        "provider", "url", "key_name", "mount", "token_env", "approle_role_id",
        "approle_secret_id_env", "approle_mount", "namespace", "ca_cert", "timeout_seconds",
    }),
}
_GLOBAL_KEYS = frozenset({"cache_ttl_seconds", "cache_size", "rotate_every"})


@dataclass(frozen=True, slots=True)
class KeySettings:
    """``[keys]``: the data-key cache and the default KEK rotation period of every region."""

    cache_ttl: float = 300.0
    cache_size: int = 10_000
    rotate_every: timedelta | None = None


def key_settings(raw: Mapping[str, Any], origins: Origins) -> KeySettings:
    source = origins.source
    reject_unknown(raw, _GLOBAL_KEYS, source, "keys.")
    return KeySettings(
        cache_ttl=number(raw.get("cache_ttl_seconds", 300), source, "keys.cache_ttl_seconds"),
        cache_size=int(number(raw.get("cache_size", 10_000), source, "keys.cache_size")),
        rotate_every=duration(raw.get("rotate_every"), origins.of("keys", "rotate_every")),
    )


def region_rotation(region: str, raw: Mapping[str, Any], default: timedelta | None,
                    origins: Origins) -> timedelta | None:
    """The region's own ``keys.rotate_every`` if it has one ("off" too), else ``default``."""
    if "rotate_every" not in raw:
        return default
    return duration(raw["rotate_every"], origins.of("regions", region, "keys", "rotate_every"))


def provider(
    region: str, raw: Mapping[str, Any], data_dir: Path, env: Mapping[str, str],
    origins: Origins,
) -> ProviderConfig:
    """The region's KEK provider; secrets are read from the variables the file names.

    An error names what the operator wrote: the file and key, or the variable that set it.
    """
    source = origins.source
    where = f"regions.{region}.keys"

    def at(key: str) -> str:
        return origins.of("regions", region, "keys", key)
    raw = {k: v for k, v in raw.items() if k != "rotate_every"}
    kind = raw.get("provider", "local")
    if kind not in _PROVIDER_KEYS:
        raise ConfigError(f"{at('provider')}: {kind!r} is not one of local, pkcs11, transit")
    reject_unknown(raw, _PROVIDER_KEYS[kind], source, f"{where}.")

    def need(key: str) -> str:
        value = raw.get(key)
        if not value:
            raise ConfigError(f"{at(key)} is required for provider {kind!r}")
        return str(value)

    def secret(key: str) -> Secret | None:
        var = raw.get(key)
        if not var:
            return None
        value = env.get(str(var))
        if not value:
            raise ConfigError(f"{at(key)} names ${var}, which is not set")
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
        timeout=number(raw.get("timeout_seconds", 5.0), source, f"{where}.timeout_seconds"),
    )
