"""Scheduled KEK rotation and the rewrap of every data key to the newest KEK version.

Each region's KEK is rotated every ``keys.rotate_every`` (:mod:`aggregator.settings`),
counted from when this database last saw a new version (``kek_rotations``,
:mod:`aggregator.models.keys`), then every data key and region secret wrapped under an
older version is rewrapped, in batches of ``batch`` keys per provider call and at most
``per_pass`` keys per pass, so a region of millions of users drains over several passes.
Rewrapping never exposes a data key where the provider can avoid it
(:meth:`vault.KeyProvider.rewrap_many`) and never writes back a key erasure deleted
meanwhile (:func:`aggregator.datakeys.rewrap_data_keys`).

Scale-out: a worker works on a region only while it holds the region's lease, a
compare-and-set on ``kek_rotations.lease_owner``/``lease_expires_at`` (renewed after every
batch), so two workers never rotate one KEK twice. A worker that dies leaves the lease
to expire; what is left to rewrap is read from the rows themselves (``kek_version`` below
the newest), so nothing is lost. A crash between the provider's rotation and the commit
that records it leaves a version this database has not seen: the next pass adopts it
(with the time it noticed) instead of rotating again.

``aggregator keys rotate --region R --rewrap`` runs the same code under the same lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.datakeys import (
    RewrapOutcome,
    RewrapPause,
    key_versions,
    rewrap_data_keys,
    rewrap_region_secrets,
)
from aggregator.errors import LeaseHeld  # re-exported: the CLI and tests import it here
from aggregator.models import KekRotation
from aggregator.models.base import table_of, utcnow
from aggregator.store import RegionRouter
from vault import KekStatus, KeyProvider

log = logging.getLogger(__name__)
_rotations = table_of(KekRotation)


class KeyMetrics:
    """Prometheus metrics of rotation and rewrap progress, by region."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.keys = Gauge("aggregator_data_keys", "Users' data keys by the KEK version "
                          "wrapping them", ["region", "kek_version"], registry=registry)
        self.latest = Gauge("aggregator_kek_latest_version", "Newest KEK version",
                            ["region"], registry=registry)
        self.rewrapped = Counter("aggregator_data_keys_rewrapped", "Data keys and region "
                                 "secrets rewrapped to a newer KEK version", ["region"],
                                 registry=registry)
        self.failed = Counter("aggregator_data_keys_rewrap_failed", "Data keys the provider "
                              "refused to rewrap (tampered, or under a retired version)",
                              ["region"], registry=registry)
        self.rotations = Counter("aggregator_kek_rotations", "KEK rotations made by this "
                                 "process", ["region"], registry=registry)
        self._seen: dict[str, set[int]] = {}

    async def refresh(self, router: RegionRouter, region: str, latest: int) -> None:
        counts = await key_versions(router, region)
        self.latest.labels(region).set(latest)
        for version in self._seen.get(region, set()) - set(counts):
            self.keys.remove(region, str(version))
        for version, count in counts.items():
            self.keys.labels(region, str(version)).set(count)
        self._seen[region] = set(counts)

    def record(self, region: str, outcome: RewrapOutcome) -> None:
        self.rewrapped.labels(region).inc(outcome.rewrapped)
        self.failed.labels(region).inc(len(outcome.failed))


@dataclass(slots=True)
class RewrapTotals:
    """A rewrap run so far: what :func:`rewrap_pass` reports to its progress callback."""

    newest: int
    rewrapped: int = 0
    skipped: int = 0
    read: int = 0
    failed: list[str] = field(default_factory=list)

    def add(self, outcome: RewrapOutcome) -> None:
        self.rewrapped += outcome.rewrapped
        self.skipped += outcome.skipped
        self.read += outcome.read
        self.failed += outcome.failed


async def status_of(provider: KeyProvider) -> KekStatus:
    return await asyncio.to_thread(provider.status)


async def claim(
    router: RegionRouter, region: str, provider: KeyProvider, owner: str, *,
    now: datetime, lease: timedelta, newest: int,
) -> KekRotation | None:
    """Take the region's lease (creating its row, at ``newest``, on first use); the row
    as claimed, or None while another process holds it."""
    c = _rotations.c
    try:
        async with router.session(region) as session, session.begin():
            if await session.get(KekRotation, provider.kek_id) is None:
                session.add(KekRotation(kek_id=provider.kek_id, region=region,
                                        provider=provider.kind, version=newest, rotated_at=now))
    except IntegrityError:
        pass  # another process created it at the same moment
    async with router.session(region) as session, session.begin():
        result = await session.execute(update(_rotations).where(
            c.kek_id == provider.kek_id,
            or_(c.lease_expires_at.is_(None), c.lease_expires_at <= now,
                c.lease_owner == owner[:64]),
        ).values(lease_owner=owner[:64], lease_expires_at=now + lease))
        if getattr(result, "rowcount", 0) != 1:
            return None
        row = await session.get(KekRotation, provider.kek_id)
        assert row is not None
        session.expunge(row)
        return row


async def holder(router: RegionRouter, region: str, kek_id: str) -> KekRotation | None:
    async with router.reader(region) as session:
        return await session.get(KekRotation, kek_id)


async def renew(router: RegionRouter, region: str, kek_id: str, owner: str,
                lease: timedelta) -> bool:
    """Extend our lease; False if it was lost (expired and taken by another process)."""
    c = _rotations.c
    async with router.session(region) as session, session.begin():
        result = await session.execute(update(_rotations).where(
            c.kek_id == kek_id, c.lease_owner == owner[:64],
        ).values(lease_expires_at=utcnow() + lease))
    return getattr(result, "rowcount", 0) == 1


async def release(router: RegionRouter, region: str, kek_id: str, owner: str) -> None:
    c = _rotations.c
    async with router.session(region) as session, session.begin():
        await session.execute(update(_rotations).where(
            c.kek_id == kek_id, c.lease_owner == owner[:64],
        ).values(lease_owner=None, lease_expires_at=None))


async def record(
    router: RegionRouter, region: str, kek_id: str, version: int, now: datetime, *,
    actor: str | None,
) -> None:
    """Remember ``version`` as the newest, seen at ``now``; audited when ``actor`` made it."""
    c = _rotations.c
    async with router.session(region) as session, session.begin():
        await session.execute(update(_rotations).where(
            c.kek_id == kek_id, c.version < version,
        ).values(version=version, rotated_at=now))
        if actor is not None:
            await audit.record(session, actor=actor, action="kek.rotated")


async def rotate_if_due(
    router: RegionRouter, region: str, provider: KeyProvider, row: KekRotation,
    status: KekStatus, every: timedelta | None, now: datetime, *, actor: str = "worker",
) -> int | None:
    """Rotate when ``every`` has passed since the newest version; the new version, if any.

    A newer version than the row knows (made by hand, or by a worker that died before
    recording it) is adopted instead, as if made ``now``.
    """
    if status.latest_version > row.version:
        await record(router, region, provider.kek_id, status.latest_version, now, actor=None)
        log.info("region %s: KEK %r version %d adopted", region, provider.kek_id,
                 status.latest_version)
        return None
    if every is None or now < row.rotated_at + every:
        return None
    version = await asyncio.to_thread(provider.rotate)
    await record(router, region, provider.kek_id, version, now, actor=actor)
    log.info("region %s: KEK %r rotated to version %d", region, provider.kek_id, version)
    return version


async def rewrap_pass(
    router: RegionRouter, region: str, provider: KeyProvider, *, newest: int, batch: int,
    budget: int | None = None, stop: asyncio.Event | None = None,
    keep_lease: Callable[[], Awaitable[bool]] | None = None,
    progress: Callable[[RewrapTotals], None] | None = None,
    metrics: KeyMetrics | None = None, pause: RewrapPause | None = None,
) -> RewrapTotals:
    """Rewrap region secrets, then data keys in ``batch``es, until none is below
    ``newest``, ``budget`` keys were read, ``stop`` is set or the lease is lost."""
    totals = RewrapTotals(newest)
    secrets = await rewrap_region_secrets(router, region, provider, newest=newest, pause=pause)
    totals.add(RewrapOutcome(secrets.rewrapped, secrets.skipped, secrets.failed,
                             read=secrets.rewrapped + secrets.skipped + len(secrets.failed)))
    after: str | None = None
    keys_read = 0  # the budget counts data keys, not the region's few secrets
    while budget is None or keys_read < budget:
        if stop is not None and stop.is_set():
            break
        limit = batch if budget is None else min(batch, budget - keys_read)
        outcome = await rewrap_data_keys(router, region, provider, newest=newest, limit=limit,
                                         after=after, pause=pause)
        totals.add(outcome)
        keys_read += outcome.read
        if metrics is not None:
            metrics.record(region, outcome)
        if progress is not None:
            progress(totals)
        if outcome.read < limit or (keep_lease is not None and not await keep_lease()):
            break
        after = outcome.last
    if metrics is not None:
        metrics.record(region, RewrapOutcome(secrets.rewrapped))
    return totals


@dataclass
class KeyRotation:
    """:class:`~aggregator.worker.jobs.PeriodicJob` rotating KEKs and rewrapping data keys.

    Example::

        KeyRotation(router, custody, {"eu": timedelta(days=90), "us": None},
                    KeyMetrics(registry), owner="host:123")
    """

    router: RegionRouter
    custody: Mapping[str, RegionCustody]
    rotate_every: Mapping[str, timedelta | None]
    metrics: KeyMetrics | None = None
    owner: str = "worker"
    batch: int = 100
    per_pass: int = 10_000
    lease: timedelta = timedelta(minutes=5)
    interval: float = 60.0
    name: str = "key_rotation"
    pause: RewrapPause | None = None  # tests only: see aggregator.datakeys.RewrapPause

    async def run_once(self, stop: asyncio.Event, *, now: datetime | None = None) -> int:
        done = 0
        for region in self.router.regions:
            if stop.is_set():
                break
            done += await self.run_region(region, stop, now=now or utcnow())
        return done

    async def run_region(self, region: str, stop: asyncio.Event, *, now: datetime) -> int:
        """One pass over one region; returns the keys rewrapped (0 if the lease is held)."""
        provider = self.custody[region].envelope.provider
        status = await status_of(provider)
        row = await claim(self.router, region, provider, self.owner, now=now, lease=self.lease,
                          newest=status.latest_version)
        if row is None:
            if self.metrics is not None:  # every worker reports, so no gauge goes stale
                await self.metrics.refresh(self.router, region, status.latest_version)
            return 0
        try:
            rotated = await rotate_if_due(self.router, region, provider, row, status,
                                          self.rotate_every.get(region), now)
            if rotated is not None and self.metrics is not None:
                self.metrics.rotations.labels(region).inc()
            newest = max(rotated or 0, status.latest_version)

            async def keep() -> bool:
                return await renew(self.router, region, provider.kek_id, self.owner, self.lease)

            totals = await rewrap_pass(self.router, region, provider, newest=newest,
                                       batch=self.batch, budget=self.per_pass, stop=stop,
                                       keep_lease=keep, metrics=self.metrics, pause=self.pause)
            if totals.failed:
                log.warning("region %s: %d data keys could not be rewrapped (first %s)",
                            region, len(totals.failed), totals.failed[0])
            if self.metrics is not None:
                await self.metrics.refresh(self.router, region, newest)
            return totals.rewrapped
        finally:
            await release(self.router, region, provider.kek_id, self.owner)


def schedule_of(row: KekRotation | None, every: timedelta | None) -> datetime | None:
    """When the next scheduled rotation is due; None without a schedule or a record."""
    if row is None or every is None:
        return None
    return row.rotated_at + every


__all__ = [
    "KeyMetrics",
    "KeyRotation",
    "LeaseHeld",
    "RewrapTotals",
    "claim",
    "holder",
    "record",
    "release",
    "renew",
    "rewrap_pass",
    "rotate_if_due",
    "schedule_of",
    "status_of",
]
