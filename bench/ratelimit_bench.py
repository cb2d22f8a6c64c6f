"""Rate limiter takes against the cheapest round trip through the same client.

- PostgreSQL: :class:`DatabaseBuckets.take` (one upsert in a write transaction) against a
  write transaction running ``SELECT 1`` through the same router and pool, so the ratio
  is the cost of the bucket arithmetic and the row lock over a bare transaction.
- Redis: :class:`RedisBuckets.take` (``EVALSHA`` of the Lua script) against ``PING``
  through the same client.

Each mode runs ``--requests`` operations from ``--concurrency`` tasks over ``--buckets``
buckets (one per application, say), after a warm-up. Prints ``RESULT pg_takes_per_s=…
pg_select1_tx_per_s=… pg_take_vs_select1=… redis_takes_per_s=… redis_pings_per_s=…
redis_take_vs_ping=…``. Target: each ratio at least 0.5 (the take is one round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import _postgres  # bench/_postgres.py: run as `python bench/…`
import redis.asyncio as aioredis
from sqlalchemy import text

from aggregator.http.ratelimit import DatabaseBuckets
from aggregator.http.ratelimit.redis_store import RedisBuckets
from aggregator.settings import RateLimit, RateLimitSettings, RegionSettings, Settings
from aggregator.store import RegionRouter, upgrade
from aggregator.store.engines import create_region_engine
from vault import LocalKeyringConfig

URL = os.environ.get("AGGREGATOR_BENCH_POSTGRES_URL",
                     "postgresql+psycopg://postgres@127.0.0.1:5432")
DATABASE = "aggregator_bench"
REDIS_URL = os.environ.get("AGGREGATOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIMIT = RateLimit(1_000_000, 1_000_000.0)  # never refuses: we measure the take itself


def create_schema() -> tuple[str, str]:
    return _postgres.create_schema(URL, DATABASE)


def drop_schema(schema: str) -> None:
    _postgres.drop_schema(URL, DATABASE, schema)


async def rate(op: Callable[[int], Awaitable[object]], requests: int, concurrency: int) -> float:
    """Operations per second, ``concurrency`` tasks sharing ``requests`` operations."""
    counter = iter(range(requests))

    async def task() -> None:
        for n in counter:
            await op(n)

    for n in range(min(200, requests)):  # warm-up: connections, prepared plans, script cache
        await op(n)
    started = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


async def postgres(args: argparse.Namespace) -> tuple[float, float]:
    schema, url = create_schema()
    try:
        engine = create_region_engine("eu", url)
        await upgrade(engine)
        await engine.dispose()
        keys = LocalKeyringConfig(Path(tempfile.mkdtemp()) / "keys", "eu")
        router = RegionRouter(Settings(data_dir=Path(tempfile.mkdtemp()),
                                       regions={"eu": RegionSettings("eu", url, keys)}),
                              engine_options={"pool_size": args.concurrency})
        store = DatabaseBuckets(router)

        async def take(n: int) -> object:
            return await store.take("eu", f"read:app_{n % args.buckets}", LIMIT)

        async def select1(n: int) -> object:
            async with router.session("eu") as session, session.begin():
                return (await session.execute(text("SELECT 1"))).scalar()

        takes = await rate(take, args.requests, args.concurrency)
        bare = await rate(select1, args.requests, args.concurrency)
        await router.dispose()
        return takes, bare
    finally:
        drop_schema(schema)


async def redis(args: argparse.Namespace) -> tuple[float, float]:
    prefix = f"aggregator-bench:{secrets.token_hex(6)}:"
    store = RedisBuckets.from_settings(RateLimitSettings(
        backend="redis", redis_url=REDIS_URL, redis_key_prefix=prefix))
    client: aioredis.Redis = store.client
    try:
        async def take(n: int) -> object:
            return await store.take("eu", f"read:app_{n % args.buckets}", LIMIT)

        async def ping(n: int) -> object:
            return await client.ping()

        takes = await rate(take, args.requests, args.concurrency)
        pings = await rate(ping, args.requests, args.concurrency)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        return takes, pings
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--buckets", type=int, default=50)
    args = parser.parse_args()
    pg_take, pg_bare = await postgres(args)
    rd_take, rd_ping = await redis(args)
    print(f"RESULT pg_takes_per_s={pg_take:.0f} pg_select1_tx_per_s={pg_bare:.0f} "
          f"pg_take_vs_select1={pg_take / pg_bare:.2f} redis_takes_per_s={rd_take:.0f} "
          f"redis_pings_per_s={rd_ping:.0f} redis_take_vs_ping={rd_take / rd_ping:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
