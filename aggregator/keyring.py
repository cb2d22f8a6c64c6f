"""One :class:`vault.Envelope` per region, built from settings.

The local keyring keeps KEKs on the same disk as the data, which is fine for the
embedded SQLite default and wrong for a production database: warn when they are combined
(the development stand-in announces itself, as warehouse's do).
"""

from __future__ import annotations

import logging
import warnings

from aggregator.settings import RegionSettings, Settings
from vault import Envelope, LocalKeyringConfig, SealCounter, open_provider

log = logging.getLogger(__name__)


class LocalKeyringInProductionWarning(UserWarning):
    """The local keyring is protecting a server database; use an HSM or Vault there."""


def envelope_for(
    region: RegionSettings, settings: Settings, *, seal_counter: SealCounter | None = None
) -> Envelope:
    """The region's envelope; the gateway passes a persistent ``seal_counter``."""
    if isinstance(region.keys, LocalKeyringConfig) and not region.database_url.startswith(
        "sqlite"
    ):
        warnings.warn(
            f"region {region.name}: the local keyring protects a server database; its KEKs "
            "sit on the gateway's disk. Configure provider = 'pkcs11' or 'transit'.",
            LocalKeyringInProductionWarning,
            stacklevel=2,
        )
    provider = open_provider(region.keys)
    return Envelope(
        provider, cache_ttl=settings.key_cache_ttl, cache_size=settings.key_cache_size,
        seal_counter=seal_counter,
    )
