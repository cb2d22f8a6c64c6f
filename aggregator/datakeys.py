"""Users' data keys: created wrapped, loaded through the envelope cache, counted, shredded.

Seal counting (NIST SP 800-38D §8.3 caps a key at 2^32 random-nonce seals) must survive
restarts and span processes, so counts live in ``data_keys.seal_count``. The envelope
asks its :class:`vault.SealCounter` synchronously, in the middle of a seal, while the
database is async; :class:`SealLedger` squares that by reserving blocks of seal numbers
ahead, asynchronously, before each seal (``ensure``), and handing them to the envelope
from memory (``reserve``). Reserved numbers a process never uses are simply lost: counts
err on the safe side.

Where a reservation is written: on PostgreSQL in its own short transaction, committed at
once. On SQLite, inside the caller's write session when one is given, because SQLite has
a single writer and a second connection would wait for the very session awaiting it;
loading a key in a write session reserves right away, before the unit of work writes.

Rewrapping after a KEK rotation (:func:`rewrap_data_keys`) reads a batch of rows below
the newest KEK version, asks the provider to rewrap them (no lock held across that
call), then writes each one back with a compare-and-set on the version *and* the
ciphertext it read. So a rewrap never resurrects a key erasure deleted meanwhile (an
``UPDATE`` of a missing row writes nothing), never undoes another rewrap, and touches
only ``ciphertext``, ``kek_version`` and ``rewrapped_at``: a seal reservation
(``seal_count``) taken in between is kept. The data key itself does not change, so
values sealed before, during and after the rewrap all open, and cached keys stay valid.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from aggregator.errors import ResidencyViolation, SealReservationMissing
from aggregator.ids import UserId, parse_id
from aggregator.models import DataKeyErasure, DataKeyRecord, RegionSecret
from aggregator.models.base import table_of, utcnow
from aggregator.store.engines import with_begin
from aggregator.store.quick import QuickReader
from aggregator.store.residency import WRITES_KEY
from aggregator.store.router import RegionRouter
from vault import DataKeyDestroyed, Envelope, KeyProvider, VaultError, WrappedKey

log = logging.getLogger(__name__)
_data_keys = table_of(DataKeyRecord)
_erasures = table_of(DataKeyErasure)
#: Statements built once, run by a session or by a :class:`QuickReader`.
_KEY_OF_USER = select(_data_keys).where(_data_keys.c.user_id == bindparam("user_id"))
_LAST_ERASURE = select(func.max(_erasures.c.seq))
_ERASURES_AFTER = (select(_erasures.c.seq, _erasures.c.dek_digest)
                   .where(_erasures.c.seq > bindparam("seq")).order_by(_erasures.c.seq))
_Rows = Callable[[Any, dict[str, Any]], Awaitable[Sequence[Any]]]
#: How often a process looks for erasures made by others (:meth:`DataKeys.notice_erasures`).
ERASURE_POLL_SECONDS = 2.0
ERASURE_ROWS_KEPT = timedelta(days=1)


def _dek_digest(dek_id: str) -> bytes:
    return hashlib.sha256(dek_id.encode("ascii")).digest()
_secrets = table_of(RegionSecret)


@dataclass(slots=True)
class _Block:
    next: int  # the next seal number to hand out
    end: int  # the last seal number reserved


class SealLedger:
    """A :class:`vault.SealCounter` backed by ``data_keys.seal_count``.

    ``block`` seal numbers are reserved per database round trip; ``ensure`` tops up when
    fewer than ``low_water`` remain, which must be at least the envelope's own block
    (at most 1,024) so a ``reserve`` call never finds the pool short.
    """

    def __init__(self, engine: AsyncEngine, *, block: int = 8192, low_water: int = 1024) -> None:
        if block < low_water:
            raise ValueError("block must be at least low_water")
        self._engine = with_begin(engine, "IMMEDIATE")
        self._sqlite = engine.dialect.name == "sqlite"
        self.block = block
        #: ``ensure`` has nothing to do while at least this many seals are reserved.
        self.low_water = low_water
        self._blocks: dict[str, _Block] = {}

    # -- vault.SealCounter ----------------------------------------------------

    def reserve(self, dek_id: str, n: int) -> int:
        held = self._blocks.get(dek_id)
        if held is None or held.end - held.next + 1 < n:
            raise SealReservationMissing(
                f"no seal budget reserved for data key {dek_id!r}: seal through "
                "aggregator.sealing.Sealer, which reserves it first"
            )
        held.next += n
        return held.next - 1

    # -- async side -----------------------------------------------------------

    def available(self, dek_id: str) -> int:
        held = self._blocks.get(dek_id)
        return 0 if held is None else held.end - held.next + 1

    def seed(self, dek_id: str, total: int) -> None:
        """Adopt the block a new key's row was inserted with (``seal_count = total``)."""
        self._blocks[dek_id] = _Block(total - self.block + 1, total)

    async def ensure(self, dek_id: str, session: AsyncSession | None = None) -> None:
        """Make sure at least ``low_water`` seals are reserved for ``dek_id``."""
        if self.available(dek_id) >= self.low_water:
            return
        stmt = (
            update(_data_keys)
            .where(_data_keys.c.dek_id == dek_id)
            .values(seal_count=_data_keys.c.seal_count + self.block)
            .returning(_data_keys.c.seal_count)
        )
        if self._sqlite and session is not None and session.info.get(WRITES_KEY):
            # SQLite has one writer: a second connection would wait for this session.
            total = (await session.execute(stmt)).scalar_one_or_none()
        else:
            # Elsewhere the reservation commits at once, so a rollback cannot undo it. A
            # caller's own transaction holding the row (deleting it, say) would make this
            # wait forever: time out instead.
            async with self._engine.begin() as conn:
                if not self._sqlite:
                    await conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                total = (await conn.execute(stmt)).scalar_one_or_none()
        if total is None:
            raise DataKeyDestroyed(f"data key {dek_id!r} does not exist (erased?)")
        self.seed(dek_id, total)

    def forget(self, dek_id: str) -> None:
        self._blocks.pop(dek_id, None)


def dek_id_for(user_id: str) -> str:
    return f"dek_{user_id}"


class DataKeys:
    """One region's users' data keys.

    Example::

        async with router.session("eu") as session, session.begin():
            session.add(user)
            key = await custody.data_keys.create(session, user.id)
        ...
        key = await custody.data_keys.load(session, user_id)   # unwrapped once, cached
        await custody.data_keys.destroy(session, user_id)      # crypto-shredding
    """

    def __init__(self, region: str, envelope: Envelope, ledger: SealLedger, *,
                 erasure_poll_seconds: float = ERASURE_POLL_SECONDS,
                 retired: dict[str, WrappedKey] | None = None) -> None:
        self.region = region
        self._envelope = envelope
        self._ledger = ledger
        #: Current data-key id -> the key it replaced, while a reseal is in progress;
        #: shared with the region's Sealer, which opens old values with it.
        self.retired: dict[str, WrappedKey] = {} if retired is None else retired
        self._poll_every = erasure_poll_seconds
        self._polled_at = -math.inf
        self._erasure_seq: int | None = None  # the last erasure row seen; None: not yet read

    async def notice_erasures(self, session: AsyncSession, *, force: bool = False) -> int:
        """Forget cached keys other processes destroyed since the last look; how many.

        Called by :meth:`load` and :meth:`load_many` at most every
        ``erasure_poll_seconds``: a process that keeps running learns of an erasure
        elsewhere within that time, and drops the key material from memory then rather
        than when its cache entry expires.
        """
        async def rows(statement: Any, params: dict[str, Any]) -> Sequence[Any]:
            return (await session.execute(statement, params)).all()

        return await self._notice(rows, force=force)

    async def _notice(self, rows: _Rows, *, force: bool = False) -> int:
        now = time.monotonic()
        if not force and now - self._polled_at < self._poll_every:
            return 0
        self._polled_at = now
        if self._erasure_seq is None:  # start from now: keys cached later are loaded anew
            (last,) = (await rows(_LAST_ERASURE, {}))[0]
            self._erasure_seq = int(last or 0)
            return 0
        found = await rows(_ERASURES_AFTER, {"seq": self._erasure_seq})
        if not found:
            return 0
        self._erasure_seq = max(int(seq) for seq, _ in found)
        gone = {bytes(digest) for _, digest in found}
        for dek_id in self._envelope.cached_ids():
            if _dek_digest(dek_id) in gone:
                self._envelope.forget(dek_id)
                self._ledger.forget(dek_id)
        return len(found)

    def _check(self, user_id: str) -> None:
        if parse_id(user_id, kind="usr").region != self.region:
            raise ResidencyViolation(f"user {user_id} does not live in region {self.region}")

    async def create(self, session: AsyncSession, user_id: UserId) -> WrappedKey:
        """Generate the user's data key and add its wrapped form to ``session``."""
        self._check(user_id)
        dek_id = dek_id_for(user_id)
        wrapped = await asyncio.to_thread(self._envelope.new_data_key, dek_id)
        session.add(DataKeyRecord(
            user_id=user_id, dek_id=dek_id, provider=wrapped.provider, kek_id=wrapped.kek_id,
            kek_version=wrapped.kek_version, ciphertext=wrapped.ciphertext,
            seal_count=self._ledger.block,
        ))
        # The row is not committed yet, so no other connection could top the ledger up.
        self._ledger.seed(dek_id, self._ledger.block)
        return wrapped

    async def load(self, session: AsyncSession, user_id: UserId) -> WrappedKey:
        """The user's wrapped key, unwrapped into the envelope cache if it is not there.

        In a write session it also reserves seals, so the unit of work can seal without
        another round trip (see the module docstring for why that matters on SQLite).
        """
        self._check(user_id)
        await self.notice_erasures(session)
        row = (await session.execute(
            select(_data_keys).where(_data_keys.c.user_id == user_id)
        )).one_or_none()
        wrapped = await self._adopt(row, user_id)
        if session.info.get(WRITES_KEY):
            await self._ledger.ensure(wrapped.dek_id, session)  # before this session writes
        return wrapped

    async def load_quick(self, reader: QuickReader, user_id: UserId) -> WrappedKey:
        """:meth:`load` for the hot reads, through the region's quick reader (one
        statement, no session). Read-only: it never reserves seals."""
        self._check(user_id)
        await self._notice(reader.rows)
        found = await reader.rows(_KEY_OF_USER, {"user_id": user_id})
        return await self._adopt(found[0] if found else None, user_id)

    async def adopt_quick(self, reader: QuickReader, row: Any, user_id: UserId) -> WrappedKey:
        """:meth:`load_quick` for a ``data_keys`` row the caller read in its own batch of
        statements (:meth:`QuickReader.rows_of`); None: the user has no key."""
        self._check(user_id)
        await self._notice(reader.rows)
        return await self._adopt(row, user_id)

    async def _adopt(self, row: Any, user_id: UserId) -> WrappedKey:
        """The wrapped key of a ``data_keys`` row, unwrapped into the cache if need be."""
        if row is None:
            self._envelope.forget(dek_id_for(user_id))  # erased elsewhere: drop any copy
            raise DataKeyDestroyed(f"user {user_id} has no data key (erased or never created)")
        wrapped = WrappedKey(
            row.dek_id, row.provider, row.kek_id, row.kek_version, bytes(row.ciphertext)
        )
        self._note_previous(row)
        if not self._envelope.is_cached(wrapped.dek_id):
            await asyncio.to_thread(self._envelope.prepare, wrapped)
        return wrapped

    def _note_previous(self, row: Any) -> None:
        if row.previous_dek_id is None or row.previous_ciphertext is None:
            self.retired.pop(row.dek_id, None)
            return
        self.retired[row.dek_id] = WrappedKey(
            row.previous_dek_id, row.provider, row.kek_id, int(row.previous_kek_version),
            bytes(row.previous_ciphertext),
        )

    async def rotate(self, session: AsyncSession, user_id: UserId) -> WrappedKey:
        """Give the user a new data key; the old one stays (wrapped) until resealing ends.

        From now on values are sealed under the new key; old values still open, through
        the previous key the row keeps, until :func:`aggregator.reseal.reseal_user` has
        resealed them all and dropped it. A rotation already in progress is resumed, not
        started again. Call in a write session; the caller commits.
        """
        self._check(user_id)
        row = (await session.execute(
            select(_data_keys).where(_data_keys.c.user_id == user_id).with_for_update()
        )).one_or_none()
        if row is None:
            raise DataKeyDestroyed(f"user {user_id} has no data key (erased or never created)")
        if row.previous_dek_id is not None:
            return await self.load(session, user_id)
        generation = int(row.dek_id.rpartition(".g")[2]) + 1 if ".g" in row.dek_id else 2
        dek_id = f"{dek_id_for(user_id)}.g{generation}"
        wrapped = await asyncio.to_thread(self._envelope.new_data_key, dek_id)
        await session.execute(update(_data_keys).where(_data_keys.c.user_id == user_id).values(
            dek_id=dek_id, provider=wrapped.provider, kek_id=wrapped.kek_id,
            kek_version=wrapped.kek_version, ciphertext=wrapped.ciphertext,
            seal_count=self._ledger.block, rewrapped_at=None,
            previous_dek_id=row.dek_id, previous_kek_version=row.kek_version,
            previous_ciphertext=row.ciphertext,
        ))
        self._ledger.seed(dek_id, self._ledger.block)
        self.retired[dek_id] = WrappedKey(row.dek_id, row.provider, row.kek_id,
                                          row.kek_version, bytes(row.ciphertext))
        return wrapped

    async def finish_rotation(self, session: AsyncSession, user_id: UserId,
                              previous_dek_id: str) -> bool:
        """Drop the previous key once nothing sealed under it is left; whether it was."""
        result = await session.execute(
            update(_data_keys).where(_data_keys.c.user_id == user_id,
                                     _data_keys.c.previous_dek_id == previous_dek_id)
            .values(previous_dek_id=None, previous_kek_version=None, previous_ciphertext=None)
        )
        self._envelope.forget(previous_dek_id)
        self._ledger.forget(previous_dek_id)
        for current, old in list(self.retired.items()):
            if old.dek_id == previous_dek_id:
                del self.retired[current]
        return bool(getattr(result, "rowcount", 0))

    async def load_many(
        self, session: AsyncSession, user_ids: Collection[UserId]
    ) -> dict[UserId, WrappedKey]:
        """:meth:`load` for several users in one query; an erased user is simply absent.

        The refresh worker loads the keys of a whole leased batch this way, inside the
        lease's transaction, instead of one round trip per credential.
        """
        for user_id in user_ids:
            self._check(user_id)
        await self.notice_erasures(session)
        if not user_ids:
            return {}
        rows = (await session.execute(
            select(_data_keys).where(_data_keys.c.user_id.in_(sorted(set(user_ids))))
        )).all()
        out: dict[UserId, WrappedKey] = {}
        for row in rows:
            wrapped = WrappedKey(
                row.dek_id, row.provider, row.kek_id, row.kek_version, bytes(row.ciphertext)
            )
            self._note_previous(row)
            if not self._envelope.is_cached(wrapped.dek_id):
                await asyncio.to_thread(self._envelope.prepare, wrapped)
            if session.info.get(WRITES_KEY):
                await self._ledger.ensure(wrapped.dek_id, session)
            out[row.user_id] = wrapped
        return out

    async def destroy(self, session: AsyncSession, user_id: UserId) -> bool:
        """Delete the wrapped key: every value sealed for the user is then unreadable.

        Returns whether a key existed. This process's cache entry goes at once; the
        erasure is recorded in ``data_key_erasures`` in the same transaction, and other
        processes drop their copy when they next poll it (:meth:`notice_erasures`, at
        most ``erasure_poll_seconds`` after their next key load); an idle process's copy
        is purged when its cache entry expires (``keys.cache_ttl_seconds``).
        """
        self._check(user_id)
        found = (await session.execute(
            select(_data_keys.c.dek_id, _data_keys.c.previous_dek_id)
            .where(_data_keys.c.user_id == user_id)
        )).one_or_none()
        ids = {dek_id_for(user_id)} | ({found.dek_id, found.previous_dek_id} - {None}
                                       if found is not None else set())
        result = await session.execute(delete(_data_keys).where(_data_keys.c.user_id == user_id))
        now = utcnow()
        for dek_id in sorted(ids):
            await session.execute(insert(_erasures).values(dek_digest=_dek_digest(dek_id),
                                                           erased_at=now))
            self._envelope.forget(dek_id)
            self._ledger.forget(dek_id)
            self.retired.pop(dek_id, None)
        await session.execute(delete(_erasures).where(
            _erasures.c.erased_at < now - ERASURE_ROWS_KEPT))
        return bool(getattr(result, "rowcount", 0))


# -- rewrapping after a KEK rotation (see the module docstring) ------------------------

#: Called between the provider's rewrap and the write-back; tests race erasure there.
RewrapPause = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RewrapOutcome:
    """One rewrap batch: rows moved to the newest version, rows left alone and why."""

    rewrapped: int = 0
    #: Deleted (erased) or changed by another writer between read and write: not written.
    skipped: int = 0
    #: Data-key ids the provider refused (tampered, or a KEK version already retired).
    failed: tuple[str, ...] = ()
    #: The last row looked at: the next batch of the same pass starts after it.
    last: str | None = None
    #: Rows read; fewer than the limit means the pass reached the end.
    read: int = 0


async def key_versions(router: RegionRouter, region: str) -> dict[int, int]:
    """How many users' data keys are wrapped under each KEK version."""
    c = _data_keys.c
    async with router.reader(region) as session:
        rows = (await session.execute(
            select(c.kek_version, func.count()).group_by(c.kek_version)
        )).all()
    return {int(version): int(count) for version, count in rows}


async def older_than(router: RegionRouter, region: str, version: int) -> int:
    """Data keys and region secrets still wrapped under a KEK version below ``version``."""
    async with router.reader(region) as session:
        total = 0
        for table in (_data_keys, _secrets):
            total += int((await session.execute(
                select(func.count()).select_from(table).where(table.c.kek_version < version)
            )).scalar_one())
        # A previous key kept for an unfinished reseal is not rewrapped: retiring its KEK
        # version would lose the values it still opens. Finish the reseal first.
        total += int((await session.execute(
            select(func.count()).select_from(_data_keys)
            .where(_data_keys.c.previous_kek_version < version)
        )).scalar_one())
    return total


async def rewrap_data_keys(
    router: RegionRouter, region: str, provider: KeyProvider, *, newest: int, limit: int,
    after: str | None = None, pause: RewrapPause | None = None,
) -> RewrapOutcome:
    """Rewrap up to ``limit`` users' data keys below ``newest``, after user id ``after``."""
    c = _data_keys.c
    query = select(c.user_id, c.dek_id, c.provider, c.kek_id, c.kek_version, c.ciphertext).where(
        c.kek_version < newest, c.provider == provider.kind, c.kek_id == provider.kek_id,
    ).order_by(c.user_id).limit(limit)
    if after is not None:
        query = query.where(c.user_id > after)
    async with router.reader(region) as session:
        rows = (await session.execute(query)).all()
    if not rows:
        return RewrapOutcome()
    found = {row.user_id: _wrapped(row) for row in rows}
    outcome = await _rewrap(router, region, provider, _data_keys, c.user_id, found, pause)
    return RewrapOutcome(outcome.rewrapped, outcome.skipped, outcome.failed,
                         rows[-1].user_id, len(rows))


async def rewrap_region_secrets(
    router: RegionRouter, region: str, provider: KeyProvider, *, newest: int,
    pause: RewrapPause | None = None,
) -> RewrapOutcome:
    """Rewrap the region's own secrets (the pepper) below ``newest``: a handful of rows."""
    c = _secrets.c
    async with router.reader(region) as session:
        rows = (await session.execute(
            select(c.name, c.dek_id, c.provider, c.kek_id, c.kek_version, c.ciphertext).where(
                c.kek_version < newest, c.provider == provider.kind,
                c.kek_id == provider.kek_id)
        )).all()
    found = {row.name: _wrapped(row) for row in rows}
    return await _rewrap(router, region, provider, _secrets, c.name, found, pause)


def _wrapped(row: Any) -> WrappedKey:
    return WrappedKey(row.dek_id, row.provider, row.kek_id, row.kek_version,
                      bytes(row.ciphertext))


async def _rewrap(
    router: RegionRouter, region: str, provider: KeyProvider, table: Table, key: Any,
    found: dict[str, WrappedKey], pause: RewrapPause | None,
) -> RewrapOutcome:
    if not found:
        return RewrapOutcome()
    new, failed = await _ask(provider, list(found.values()))
    if pause is not None:
        await pause()
    written = 0
    now = utcnow()
    async with router.session(region) as session, session.begin():
        for (name, old), fresh in zip(found.items(), new, strict=True):
            if fresh is None:
                continue
            result = await session.execute(update(table).where(
                key == name, table.c.kek_version == old.kek_version,
                table.c.ciphertext == old.ciphertext,
            ).values(_rewrapped_values(table, fresh, now)))
            written += int(getattr(result, "rowcount", 0) or 0)
    done = sum(1 for fresh in new if fresh is not None)
    return RewrapOutcome(written, done - written, tuple(failed))


def _rewrapped_values(table: Table, fresh: WrappedKey, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"ciphertext": fresh.ciphertext, "kek_version": fresh.kek_version}
    if "rewrapped_at" in table.c:
        values["rewrapped_at"] = now
    return values


async def _ask(
    provider: KeyProvider, batch: Sequence[WrappedKey]
) -> tuple[list[WrappedKey | None], list[str]]:
    """The provider's rewrap of ``batch``; a refused batch is retried key by key so one
    bad row (tampered, or under a retired version) does not hold the others back."""
    try:
        return list(await asyncio.to_thread(provider.rewrap_many, batch)), []
    except VaultError:
        if len(batch) == 1:
            log.warning("data key %s could not be rewrapped", batch[0].dek_id, exc_info=True)
            return [None], [batch[0].dek_id]
    out: list[WrappedKey | None] = []
    failed: list[str] = []
    for item in batch:
        [fresh], bad = await _ask(provider, [item])
        out.append(fresh)
        failed += bad
    return out, failed
