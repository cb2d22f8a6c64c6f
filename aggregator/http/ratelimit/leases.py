"""Tokens leased from a shared bucket in batches, so a read does not write the database.

Decision (bench/read_api_bench.py, bench/ratelimit_bench.py): the database store runs one
``INSERT … ON CONFLICT DO UPDATE`` per request, 10 % of a ``GET`` of accounts. A
:class:`LeasedBuckets` process takes ``lease`` tokens at once from the shared bucket
(the same atomic statement, with ``cost = lease``) and grants them locally, one per
request, with no I/O, until they run out or :data:`HOLD` seconds pass; then it leases
again. Small buckets (fewer than ``2 * 16`` tokens) are not leased: every request goes
to the store, exactly as before.

The shared-budget guarantee and its bound:

- never more: every token a process grants was first taken from the shared bucket, so
  all gateways together grant at most what one shared bucket allows;
- at most ``lease`` fewer per process: a process holds at most ``lease`` unspent tokens
  of a bucket (``capacity // 16``, at most :data:`MAX_LEASE`), and drops them after
  :data:`HOLD` seconds. With *P* processes the fleet may refuse a request while up to
  ``P * lease`` tokens sit unspent elsewhere; when a lease is refused the process falls
  back to taking a single token, so the last tokens of a bucket are still granted.

The ``RateLimit`` field's ``r`` is then an estimate: the shared level when the lease
was taken plus what is left of it here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aggregator.http.ratelimit.policy import Level
from aggregator.http.ratelimit.stores import BucketStore
from aggregator.settings import RateLimit

#: Seconds a process keeps unspent leased tokens before dropping them.
HOLD = 1.0
#: The largest lease, in tokens.
MAX_LEASE = 32
#: A bucket leases one ``LEASE_DIVISOR``-th of its capacity at a time.
LEASE_DIVISOR = 16


def lease_size(limit: RateLimit) -> int:
    """How many tokens one lease takes (1: not leased, every request goes to the store)."""
    size = min(MAX_LEASE, limit.capacity // LEASE_DIVISOR)
    return size if size >= 2 else 1


@dataclass
class _Lease:
    left: int
    shared: float  # the shared bucket's level right after the lease was taken
    until: float


class LeasedBuckets:
    """A :class:`BucketStore` granting from leases taken from ``store`` (see module doc)."""

    def __init__(self, store: BucketStore, *, hold: float = HOLD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.hold = hold
        self._clock = clock
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._renewing: dict[tuple[str, str], asyncio.Lock] = {}

    async def take(
        self, region: str, bucket: str, limit: RateLimit, *, cost: int = 1,
        now: float | None = None,
    ) -> Level:
        size = lease_size(limit)
        if size == 1 or cost != 1 or now is not None:
            return await self.store.take(region, bucket, limit, cost=cost, now=now)
        key = (region, bucket)
        granted = self._grant(key)
        if granted is not None:
            return granted
        # One renewal at a time per bucket: when a lease runs out under concurrent
        # requests, the others wait for the renewal instead of each leasing (16 requests
        # in flight took 16 leases, 16 database writes, and held 16 x 32 tokens idle).
        lock = self._renewing.setdefault(key, asyncio.Lock())
        async with lock:
            granted = self._grant(key)
            if granted is not None:
                return granted
            return await self._renew(key, region, bucket, limit, size)

    def _grant(self, key: tuple[str, str]) -> Level | None:
        lease = self._leases.get(key)
        if lease is not None and lease.left > 0 and lease.until > self._clock():
            lease.left -= 1
            return Level(True, lease.shared + lease.left)
        return None

    async def _renew(self, key: tuple[str, str], region: str, bucket: str, limit: RateLimit,
                     size: int) -> Level:
        level = await self.store.take(region, bucket, limit, cost=size)
        if level.granted:
            self._leases[key] = _Lease(size - 1, level.tokens, self._clock() + self.hold)
            self._forget_expired()
            return Level(True, level.tokens + size - 1)
        self._leases.pop(key, None)
        if level.tokens >= 1.0:  # the bucket holds less than a lease: take just one token
            return await self.store.take(region, bucket, limit, cost=1)
        return level

    def _forget_expired(self) -> None:
        if len(self._leases) > 10_000:
            now = self._clock()
            for key in [k for k, lease in self._leases.items() if lease.until <= now]:
                del self._leases[key]
        if len(self._renewing) > 10_000:
            for key in [k for k, lock in self._renewing.items() if not lock.locked()]:
                del self._renewing[key]

    async def close(self) -> None:
        self._leases.clear()
        await self.store.close()
