"""``load_settings``: the file, then the environment over it, then each section validated."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.errors import ConfigError
from aggregator.settings.egress import egress_policy
from aggregator.settings.env import (
    CONFIG_VARIABLE,
    Origins,
    overlay,
    overlay_region,
    region_names,
)
from aggregator.settings.erasure import (
    DEFAULT_DEADLINE_DAYS,
    DEFAULT_REVOKE_CONCURRENCY,
    DEFAULT_REVOKE_PER_BANK,
    deadline_days,
    revocation_bounds,
)
from aggregator.settings.http import public_url
from aggregator.settings.keys import key_settings
from aggregator.settings.rate_limits import RateLimitSettings, rate_limit_settings
from aggregator.settings.regions import (
    DEFAULT_REGIONS,
    REGION_NAME,
    RegionSettings,
    region_settings,
)
from aggregator.settings.values import mapping, reject_unknown
from aggregator.settings.worker import WorkerSettings, worker_settings
from connectors import EgressPolicy

_TOP_KEYS = frozenset({"data_dir", "regions", "keys", "banks", "http", "worker", "egress",
                       "rate_limits", "erasure"})


@dataclass(frozen=True, slots=True)
class Settings:
    """The gateway's whole configuration, validated."""

    data_dir: Path
    regions: Mapping[str, RegionSettings]
    key_cache_ttl: float = 300.0
    key_cache_size: int = 10_000
    bank_dirs: tuple[Path, ...] = ()
    #: ``[banks] sandbox``: whether the built-in sandbox bank profiles
    #: (``connectors/banks/``) are offered; off unless asked for (docs/operations.md,
    #: "Sandbox banks").
    sandbox_banks: bool = False
    #: The gateway's external base URL (``[http] public_url``), without a trailing slash;
    #: ``None`` means "the base URL of each request", right only without a proxy.
    public_url: str | None = None
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    #: ``[erasure] deadline_days``: a new erasure request's deadline (GDPR Art. 12(3)).
    erasure_deadline_days: int = DEFAULT_DEADLINE_DAYS
    #: ``[erasure] revoke_per_bank`` / ``revoke_concurrency``: revocation calls in flight
    #: at one bank and in all, per process.
    erasure_revoke_per_bank: int = DEFAULT_REVOKE_PER_BANK
    erasure_revoke_concurrency: int = DEFAULT_REVOKE_CONCURRENCY
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
    if path is None and env.get(CONFIG_VARIABLE):
        path = Path(env[CONFIG_VARIABLE])
    if path is None and Path("aggregator.toml").is_file():
        path = Path("aggregator.toml")
    source = str(path) if path else "defaults"
    raw = _read_toml(path) if path else {}
    variables = overlay(raw, env, source)
    reject_unknown(raw, _TOP_KEYS, source, "")
    names = region_names(env, list(mapping(raw.get("regions", {}), source, "regions"))
                         or DEFAULT_REGIONS, source, REGION_NAME)
    for name in names:
        variables.update(overlay_region(raw, name, env, source))
    origins = Origins(source, variables)
    data_dir = _path(raw.get("data_dir", "var"), origins.of("data_dir"))
    keys = key_settings(mapping(raw.get("keys", {}), source, "keys"), origins)
    raw_regions = raw.get("regions", {})
    regions = {
        name: region_settings(name, raw_regions.get(name, {}), data_dir, env, origins,
                              keys.rotate_every)
        for name in names
    }
    banks = mapping(raw.get("banks", {}), source, "banks")
    reject_unknown(banks, frozenset({"directories", "sandbox"}), source, "banks.")
    bank_dirs = banks.get("directories", [])
    if not isinstance(bank_dirs, list) or not all(isinstance(d, str) and d for d in bank_dirs):
        raise ConfigError(f"{origins.of('banks', 'directories')} must be a list of paths")
    sandbox_banks = banks.get("sandbox", False)
    if not isinstance(sandbox_banks, bool):
        raise ConfigError(f"{origins.of('banks', 'sandbox')} must be true or false")
    url = public_url(mapping(raw.get("http", {}), source, "http"), origins)
    erasure = mapping(raw.get("erasure", {}), source, "erasure")
    revoke_per_bank, revoke_concurrency = revocation_bounds(erasure, origins)
    plaid_regions = [r.name for r in regions.values() if r.plaid is not None]
    if plaid_regions and url is None:
        raise ConfigError(
            f"{source}: regions.{plaid_regions[0]}.plaid needs http.public_url "
            "(or AGGREGATOR_PUBLIC_URL): Plaid's webhooks are sent there"
        )
    return Settings(
        data_dir=data_dir,
        regions=regions,
        key_cache_ttl=keys.cache_ttl,
        key_cache_size=keys.cache_size,
        bank_dirs=tuple(Path(p) for p in bank_dirs),
        sandbox_banks=sandbox_banks,
        public_url=url,
        rate_limits=rate_limit_settings(
            mapping(raw.get("rate_limits", {}), source, "rate_limits"),
            [r.database_url for r in regions.values()], env, source,
        ),
        erasure_deadline_days=deadline_days(erasure, origins),
        erasure_revoke_per_bank=revoke_per_bank,
        erasure_revoke_concurrency=revoke_concurrency,
        source=source,
        worker=worker_settings(mapping(raw.get("worker", {}), source, "worker"), origins),
        egress=egress_policy(mapping(raw.get("egress", {}), source, "egress"), origins),
    )


def _path(value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a directory path")
    return Path(value)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: settings file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
