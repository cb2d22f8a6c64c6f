"""Bucket stores: the region's database (SQLite and PostgreSQL) and a real Redis.

Each store must compute exactly the reference arithmetic (``take_tokens``), atomically:
two gateways (two routers, two Redis clients) hammering one bucket at once are granted
exactly its burst, never more.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from aggregator.http.ratelimit import (
    BucketStore,
    DatabaseBuckets,
    MemoryBuckets,
    RateLimitStoreUnavailable,
    take_tokens,
)
from aggregator.http.ratelimit.redis_store import RedisBuckets
from aggregator.models import RateLimitBucket
from aggregator.settings import RateLimit, RateLimitSettings, Settings
from aggregator.store import RegionRouter
from tests.aggregator.http._ratelimit import REDIS_URL, redis_limits

__all__ = ["redis_limits"]  # the fixture, imported for pytest


async def _replay(store: BucketStore, seed: int) -> None:
    """Random waits and limits, the store's answers compared with the reference."""
    rng = random.Random(seed)
    limit = RateLimit(rng.randint(1, 8), rng.choice([0.25, 1.0, 3.5]))
    tokens: float | None = None
    updated: float | None = None
    now = 1_700_000_000.0 + rng.random()
    for _ in range(40):
        now += rng.choice([0.0, 0.0, 0.1, 0.7, 2.0, 30.0])
        got = await store.take("eu", f"read:replay-{seed}", limit, now=now)
        want = take_tokens(tokens, updated, now, limit)
        assert got.granted == want.granted
        assert got.tokens == pytest.approx(want.tokens, abs=1e-6)
        tokens, updated = want.tokens, now


async def _burst_from_two_gateways(first: BucketStore, second: BucketStore) -> int:
    limit = RateLimit(15, 0.0001)  # no meaningful refill during the test
    takes = [store.take("eu", "write:app_shared", limit) for _ in range(20)
             for store in (first, second)]
    levels = await asyncio.gather(*takes)
    return sum(level.granted for level in levels)


# -- the region's database ------------------------------------------------------------


async def test_database_buckets_follow_the_reference_arithmetic(
    region_router: RegionRouter,
) -> None:
    store = DatabaseBuckets(region_router)
    for seed in range(3):
        await _replay(store, seed)


async def test_two_gateways_on_one_database_share_one_burst(
    region_router: RegionRouter, settings: Settings
) -> None:
    other = RegionRouter(settings)  # a second gateway process: its own pool, same database
    try:
        granted = await _burst_from_two_gateways(DatabaseBuckets(region_router),
                                                 DatabaseBuckets(other))
    finally:
        await other.dispose()
    assert granted == 15


async def test_the_database_clock_times_refills(region_router: RegionRouter) -> None:
    store = DatabaseBuckets(region_router)
    before = time.time()
    await store.take("us", "read:app_clock", RateLimit(3, 1.0))
    async with region_router.reader("us") as session:
        row = (await session.execute(select(RateLimitBucket))).scalar_one()
    assert before - 5 < row.updated_at < time.time() + 5
    assert row.tokens == 2.0
    assert row.expires_at == pytest.approx(row.updated_at + 3.0)
    async with region_router.reader("eu") as session:  # only the region asked holds it
        assert (await session.execute(select(func.count(RateLimitBucket.bucket)))).scalar() == 0


async def test_expired_buckets_are_purged_in_bounded_batches(
    region_router: RegionRouter,
) -> None:
    store = DatabaseBuckets(region_router, purge_interval=3600)
    limit = RateLimit(10, 1.0)  # full again 10 s after its last use
    t0 = 1_700_000_000.0
    for n in range(5):
        await store.take("eu", f"read:purge-{n}", limit, now=t0)
    await store.take("eu", "read:recent", limit, now=t0 + 8)
    assert await store.purge("eu", now=t0 + 5) == 0
    assert await store.purge("eu", now=t0 + 11, batch=3) == 3
    assert await store.purge("eu", now=t0 + 11, batch=3) == 2
    async with region_router.reader("eu") as session:
        left = (await session.execute(select(RateLimitBucket.bucket))).scalars().all()
    assert left == ["read:recent"]


# -- Redis ----------------------------------------------------------------------------


@pytest.fixture
async def redis_store(redis_limits: RateLimitSettings) -> AsyncIterator[RedisBuckets]:
    store = RedisBuckets.from_settings(redis_limits)
    yield store
    await store.close()


@pytest.mark.redis
async def test_redis_buckets_follow_the_reference_arithmetic(redis_store: RedisBuckets) -> None:
    for seed in range(3):
        await _replay(redis_store, seed)


@pytest.mark.redis
async def test_two_gateways_on_one_redis_share_one_burst(
    redis_store: RedisBuckets, redis_limits: RateLimitSettings
) -> None:
    other = RedisBuckets.from_settings(redis_limits)  # a second process's own pool
    try:
        assert await _burst_from_two_gateways(redis_store, other) == 15
    finally:
        await other.close()


@pytest.mark.redis
async def test_redis_buckets_expire_by_themselves(redis_store: RedisBuckets) -> None:
    await redis_store.take("eu", "link:ip:abc", RateLimit(4, 2.0))  # full again in 2 s
    ttl = await redis_store.client.pttl(redis_store.key("eu", "link:ip:abc"))
    assert 0 < ttl <= 2000


async def test_an_unreachable_redis_is_a_typed_error() -> None:
    with socket_closed() as port:
        store = RedisBuckets.from_settings(RateLimitSettings(
            backend="redis", redis_url=f"redis://127.0.0.1:{port}/0"))
        with pytest.raises(RateLimitStoreUnavailable):
            await store.take("eu", "read:x", RateLimit(1, 1.0))
        await store.close()


def socket_closed() -> _ClosedPort:
    return _ClosedPort()


class _ClosedPort:
    """A loopback port nothing listens on (bound, never listening, for the block)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


async def test_memory_buckets_are_one_process_only_and_say_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryBuckets()
    assert "every gateway process grants the full budget" in caplog.text
    await _replay(store, 7)
    assert REDIS_URL  # the module's Redis address stays configurable for CI


async def test_taking_purges_expired_buckets_once_per_interval(
    region_router: RegionRouter,
) -> None:
    store = DatabaseBuckets(region_router, purge_interval=0.0)
    for n in range(3):  # used long ago: expired by the database's clock
        await store.take("eu", f"read:old-{n}", RateLimit(2, 1.0), now=1_000_000.0)
    await store.take("eu", "read:live", RateLimit(2, 1.0))
    async with region_router.reader("eu") as session:
        left = (await session.execute(select(RateLimitBucket.bucket))).scalars().all()
    assert left == ["read:live"]
