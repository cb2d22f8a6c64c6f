"""Bank call outcomes, tallied in process and written in batches.

A call to a bank must not cost a database write: the recorder adds each call to an
in-memory tally keyed by (region, bank, operation, minute, outcome) and a flush writes
every tally of a region in one transaction (one upsert statement that *adds* to the
stored row, so any number of processes share a minute). Refresh attempts of a
connection are buffered the same way and inserted by the same transaction.

Memory is bounded: at most ``max_keys`` tallies and ``max_attempts`` attempts wait for a
flush; past that, new ones are dropped and counted (:attr:`CallRecorder.dropped`), which
only happens when a region's database has been unreachable for many flush intervals. A
flush that fails puts its batch back (within the same bounds) for the next one.

Example::

    recorder = CallRecorder(router)
    recorder.call("eu", "sandbox", "refresh", "ok", 0.084)
    await recorder.flush()      # or let the next call past ``interval`` schedule it
    await recorder.aclose()     # at shutdown: the last flush
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aggregator.bankhealth.store import write_batch
from aggregator.models.bankhealth import BUCKET_COLUMNS, BUCKETS
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter

log = logging.getLogger(__name__)

#: What a bank is called for (the ``operation`` column).
OPERATIONS = ("refresh", "sync", "consent")
#: Where a process keeps its recorder among shared services (``Services.extra``).
RECORDER_KEY = "aggregator.bankhealth"


@dataclass(frozen=True, slots=True)
class _Key:
    region: str
    bank_id: str
    operation: str
    minute: datetime
    outcome: str


@dataclass(slots=True)
class Tally:
    """Calls of one key: how many, their latency sum, and per bucket how many."""

    calls: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))

    def add(self, seconds: float) -> None:
        self.calls += 1
        self.seconds += seconds
        slot = bisect_left(BUCKETS, seconds)
        if slot < len(BUCKETS):
            self.buckets[slot] += 1

    def merge(self, other: Tally) -> None:
        self.calls += other.calls
        self.seconds += other.seconds
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


class CallRecorder:
    """Tallies bank calls and refresh attempts in memory; :meth:`flush` writes them.

    ``interval``: a recorded call schedules a flush in the background when the last one
    is older than this (a process without a periodic job, such as the gateway, needs
    nothing else); :meth:`aclose` flushes what is left.
    """

    def __init__(self, router: RegionRouter, *, interval: float = 10.0,
                 max_keys: int = 5_000, max_attempts: int = 20_000) -> None:
        self.router = router
        self.interval = interval
        self.max_keys = max_keys
        self.max_attempts = max_attempts
        self.dropped = 0
        self.writes = 0  # transactions committed by flushes (one per region and flush)
        self._tallies: dict[_Key, Tally] = {}
        self._attempts: dict[str, list[dict[str, Any]]] = {}
        self._pending = 0
        self._lock = asyncio.Lock()
        self._last = time.monotonic()
        self._task: asyncio.Task[int] | None = None
        self._closed = False

    def call(self, region: str, bank_id: str, operation: str, outcome: str,
             seconds: float, *, at: datetime | None = None) -> None:
        """Count one call that reached (or was sent to) the bank."""
        at = at or utcnow()
        key = _Key(region, bank_id, operation, at.replace(second=0, microsecond=0), outcome)
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) >= self.max_keys:
                self.dropped += 1
                return
            tally = self._tallies[key] = Tally()
        tally.add(max(seconds, 0.0))
        self._maybe_flush()

    def attempt(self, region: str, *, connection_id: str, user_id: str, bank_id: str,
                outcome: str, error_code: str | None, worker: str,
                at: datetime | None = None) -> None:
        """Keep one refresh attempt for the connection's history."""
        if self._pending >= self.max_attempts:
            self.dropped += 1
            return
        self._attempts.setdefault(region, []).append({
            "connection_id": connection_id, "user_id": user_id, "bank_id": bank_id,
            "attempted_at": at or utcnow(), "outcome": outcome,
            "error_code": error_code, "worker": worker[:64],
        })
        self._pending += 1
        self._maybe_flush()

    @property
    def waiting(self) -> int:
        """Tallies and attempts not written yet."""
        return len(self._tallies) + self._pending

    def _maybe_flush(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        if time.monotonic() - self._last < self.interval:
            return
        try:
            self._task = asyncio.get_running_loop().create_task(self.flush())
        except RuntimeError:
            return  # no loop (a synchronous caller): the next flush takes it

    async def flush(self) -> int:
        """Write everything tallied so far, one transaction per region; returns rows written.

        A region whose database fails keeps its batch for the next flush (bounded)."""
        async with self._lock:
            self._last = time.monotonic()
            tallies, self._tallies = self._tallies, {}
            attempts, self._attempts, self._pending = self._attempts, {}, 0
            by_region: dict[str, dict[_Key, Tally]] = {}
            for key, tally in tallies.items():
                by_region.setdefault(key.region, {})[key] = tally
            written = 0
            for region in sorted(set(by_region) | set(attempts)):
                rows = [_row(k, t) for k, t in by_region.get(region, {}).items()]
                tried = attempts.get(region, [])
                try:
                    written += await write_batch(self.router, region, rows, tried)
                except Exception:
                    log.warning("bank health: the flush to region %s failed; kept for the "
                                "next one", region, exc_info=True)
                    self._put_back(by_region.get(region, {}), region, tried)
                    continue
                self.writes += 1
            return written

    def _put_back(self, tallies: dict[_Key, Tally], region: str,
                  attempts: list[dict[str, Any]]) -> None:
        for key, tally in tallies.items():
            found = self._tallies.get(key)
            if found is not None:
                found.merge(tally)
            elif len(self._tallies) < self.max_keys:
                self._tallies[key] = tally
            else:
                self.dropped += tally.calls
        room = max(self.max_attempts - self._pending, 0)
        self.dropped += max(len(attempts) - room, 0)
        kept = attempts[:room]
        self._attempts.setdefault(region, [])[:0] = kept
        self._pending += len(kept)

    async def aclose(self) -> None:
        """Stop scheduling flushes and write what is left (shutdown)."""
        self._closed = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self.flush()


def _row(key: _Key, tally: Tally) -> dict[str, Any]:
    return {"bank_id": key.bank_id, "operation": key.operation, "minute": key.minute,
            "outcome": key.outcome, "calls": tally.calls, "seconds": tally.seconds,
            **dict(zip(BUCKET_COLUMNS, tally.buckets, strict=True))}


def recorder_in(extra: dict[str, object], router: RegionRouter) -> CallRecorder:
    """The process's recorder kept in ``extra``, made on first use (one per process)."""
    found = extra.get(RECORDER_KEY)
    if not isinstance(found, CallRecorder):
        found = extra[RECORDER_KEY] = CallRecorder(router)
    return found


async def close_recorder_in(extra: dict[str, object]) -> None:
    """Flush the recorder :func:`recorder_in` made, if any (at shutdown)."""
    found = extra.get(RECORDER_KEY)
    if isinstance(found, CallRecorder):
        await found.aclose()
