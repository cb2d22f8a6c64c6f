"""Everything a region needs to seal, open and look up values, built once at start-up.

Example::

    router = RegionRouter(settings)
    custody = await open_custody(router, settings)       # one entry per region
    eu = custody["eu"]
    async with router.session("eu") as session, session.begin():
        key = await eu.data_keys.load(session, user_id)
        await eu.sealer.seal_into(key, credential, "refresh_token_sealed", token,
                                  session=session)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aggregator.datakeys import DataKeys, SealLedger
from aggregator.keyring import envelope_for
from aggregator.pepper import load_pepper
from aggregator.sealing import KeyedHasher, Sealer
from aggregator.settings import Settings
from aggregator.store.router import RegionRouter
from vault import Envelope, WrappedKey


@dataclass(frozen=True, slots=True)
class RegionCustody:
    """One region's envelope and the services built on it."""

    region: str
    envelope: Envelope
    ledger: SealLedger
    data_keys: DataKeys
    sealer: Sealer
    hasher: KeyedHasher

    def close(self) -> None:
        self.envelope.provider.close()


async def region_custody(
    router: RegionRouter, region: str, envelope: Envelope, ledger: SealLedger
) -> RegionCustody:
    """Assemble a region's custody around an envelope whose seal counter is ``ledger``."""
    pepper = await load_pepper(router, region, envelope.provider)
    retired: dict[str, WrappedKey] = {}  # keys being replaced: DataKeys fills, Sealer reads
    return RegionCustody(
        region=region,
        envelope=envelope,
        ledger=ledger,
        data_keys=DataKeys(region, envelope, ledger, retired=retired),
        sealer=Sealer(region, envelope, ledger, retired=retired),
        hasher=KeyedHasher(pepper),
    )


async def open_custody(router: RegionRouter, settings: Settings) -> Mapping[str, RegionCustody]:
    """Custody for every configured region, from the settings' key providers."""
    out: dict[str, RegionCustody] = {}
    for name in router.regions:
        ledger = SealLedger(router.engine(name))
        envelope = envelope_for(settings.region(name), settings, seal_counter=ledger)
        out[name] = await region_custody(router, name, envelope, ledger)
    return out
