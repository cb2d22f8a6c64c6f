"""Rate limiter takes against the cheapest round trip through the same client.

- PostgreSQL: :class:`DatabaseBuckets.take` (one upsert in a write transaction) against a
  write transaction running ``SELECT 1`` through the same router and pool, so the ratio
  is the cost of the bucket arithmetic and the row lock over a bare transaction. Also
  :class:`~aggregator.http.ratelimit.leases.LeasedBuckets` over it (the default store
  since the read path work: one upsert per lease of up to 32 tokens), whose limit is
  :class:`MemoryBuckets` (the same arithmetic in this process, no I/O at all).
- Redis: :class:`RedisBuckets.take` (``EVALSHA`` of the Lua script) against ``PING``
  through the same client.

Each mode runs ``--requests`` operations from ``--concurrency`` tasks over ``--buckets``
buckets (one per application, say), after a warm-up. Rounds interleave the variants
(the order alternates) and each figure is the median over ``--rounds``. Prints
``RESULT pg_takes_per_s=… pg_select1_tx_per_s=… pg_take_vs_select1=…
pg_leased_vs_memory=… redis_takes_per_s=… redis_pings_per_s=… redis_take_vs_ping=…``.
Target: each ratio at least 0.5 (the take is one round trip; a lease is no I/O).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import _postgres  # bench/_postgres.py: run as `python bench/…`
import redis.asyncio as aioredis
from sqlalchemy import text

from aggregator.http.ratelimit import DatabaseBuckets, MemoryBuckets
from aggregator.http.ratelimit.leases import LeasedBuckets
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


async def interleaved(ops: dict[str, Callable[[int], Awaitable[object]]],
                      args: argparse.Namespace) -> dict[str, float]:
    """Median rate of each op over ``args.rounds`` rounds, the order alternating."""
    rates: dict[str, list[float]] = {name: [] for name in ops}
    for r in range(args.rounds):
        for name in list(ops) if r % 2 == 0 else list(ops)[::-1]:
            rates[name].append(await rate(ops[name], args.requests, args.concurrency))
    return {name: statistics.median(v) for name, v in rates.items()}


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


async def postgres(args: argparse.Namespace) -> dict[str, float]:
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
        leased = LeasedBuckets(DatabaseBuckets(router))
        memory = MemoryBuckets()
        # A bucket that leases (capacity // 16 >= 2) yet never refuses within the run.
        lease_limit = RateLimit(512, 1_000_000.0)

        async def take(n: int) -> object:
            return await store.take("eu", f"read:app_{n % args.buckets}", LIMIT)

        async def leased_take(n: int) -> object:
            return await leased.take("eu", f"read:app_{n % args.buckets}", lease_limit)

        async def memory_take(n: int) -> object:
            return await memory.take("eu", f"read:app_{n % args.buckets}", lease_limit)

        async def select1(n: int) -> object:
            async with router.session("eu") as session, session.begin():
                return (await session.execute(text("SELECT 1"))).scalar()

        rates = await interleaved({"take": take, "leased": leased_take, "memory": memory_take,
                                   "select1": select1},
                                  args)
        await router.dispose()
        return rates
    finally:
        drop_schema(schema)


async def redis(args: argparse.Namespace) -> dict[str, float]:
    prefix = f"aggregator-bench:{secrets.token_hex(6)}:"
    store = RedisBuckets.from_settings(RateLimitSettings(
        backend="redis", redis_url=REDIS_URL, redis_key_prefix=prefix))
    client: aioredis.Redis = store.client
    try:
        async def take(n: int) -> object:
            return await store.take("eu", f"read:app_{n % args.buckets}", LIMIT)

        async def ping(n: int) -> object:
            return await client.ping()

        rates = await interleaved({"take": take, "ping": ping}, args)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        return rates
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--buckets", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 requests, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 1000, 3
    pg = await postgres(args)
    rd = await redis(args)
    print(f"PostgreSQL: take {pg['take']:.0f}/s, leased take {pg['leased']:.0f}/s, "
          f"in-memory take {pg['memory']:.0f}/s, "
          f"SELECT 1 transaction {pg['select1']:.0f}/s; Redis: take {rd['take']:.0f}/s, "
          f"PING {rd['ping']:.0f}/s (medians of {args.rounds} interleaved rounds)")
    print(f"RESULT pg_takes_per_s={pg['take']:.0f} pg_select1_tx_per_s={pg['select1']:.0f} "
          f"pg_take_vs_select1={pg['take'] / pg['select1']:.2f} "
          f"pg_leased_takes_per_s={pg['leased']:.0f} "
          f"pg_leased_vs_memory={pg['leased'] / pg['memory']:.2f} "
          f"redis_takes_per_s={rd['take']:.0f} redis_pings_per_s={rd['ping']:.0f} "
          f"redis_take_vs_ping={rd['take'] / rd['ping']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
