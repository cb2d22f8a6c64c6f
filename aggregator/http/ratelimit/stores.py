"""Where buckets live: the region's database (default), or one process's memory.

Every store applies :func:`~aggregator.http.ratelimit.policy.take_tokens` atomically,
so gateways sharing a store share one budget:

- :class:`DatabaseBuckets`: one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` statement
  carries the refill arithmetic, so PostgreSQL applies it under the row's lock (two
  gateways' concurrent requests serialise on the row and each sees the other's take),
  and SQLite runs it inside the write lock its write sessions take at ``BEGIN
  IMMEDIATE``. Time is the database's clock, so gateways on machines whose clocks
  disagree still agree on refills. Rows past ``expires_at`` are purged in bounded
  batches, at most once a minute per process and region.
- :class:`MemoryBuckets`: a dict in this process. Development only: each process would
  grant the full budget, so settings refuse it with PostgreSQL regions, and it logs a
  warning when built.

:mod:`aggregator.http.ratelimit.redis_store` adds Redis. A store that cannot be reached
raises :class:`RateLimitStoreUnavailable`; the middleware then lets the request through
(fail open, logged and counted): the limiter protects capacity, it authorises nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from aggregator.errors import GatewayError
from aggregator.http.ratelimit.policy import Level, full_after, take_tokens
from aggregator.settings import RateLimit
from aggregator.store import RegionRouter

log = logging.getLogger(__name__)

PURGE_INTERVAL = 60.0
PURGE_BATCH = 1000


class RateLimitStoreUnavailable(GatewayError):
    """Raised when the bucket store (database or Redis) cannot be reached or fails."""

    code = "rate_limit_store_unavailable"


class BucketStore(Protocol):
    """Takes ``cost`` tokens from one bucket atomically and says what is left.

    Contract: the result is exactly :func:`take_tokens` applied to the bucket's state as
    every other user of the store last left it; ``now`` (seconds since the epoch) is for
    tests, production passes ``None`` and the store reads its own clock. ``region`` names
    the region whose store holds the bucket.
    """

    async def take(
        self, region: str, bucket: str, limit: RateLimit, *, cost: int = 1,
        now: float | None = None,
    ) -> Level: ...

    async def close(self) -> None: ...


@contextlib.contextmanager
def map_database_errors() -> Iterator[None]:
    try:
        yield
    except (DBAPIError, OSError) as exc:
        raise RateLimitStoreUnavailable(
            f"the rate limit store failed: {type(exc).__name__}"
        ) from exc


_CLOCK = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS double precision)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_LEAST = {"postgresql": "LEAST", "sqlite": "MIN"}
_GREATEST = {"postgresql": "GREATEST", "sqlite": "MAX"}
_DOUBLE = {"postgresql": "double precision", "sqlite": "REAL"}


def _take_sql(dialect: str) -> str:
    dbl, t = _DOUBLE[dialect], "rate_limit_buckets"
    now = f"COALESCE(CAST(:now AS {dbl}), {_CLOCK[dialect]})"
    level = (f"{_LEAST[dialect]}(CAST(:capacity AS {dbl}), {t}.tokens + "
             f"{_GREATEST[dialect]}(0.0, excluded.updated_at - {t}.updated_at) "
             f"* CAST(:rate AS {dbl}))")
    cost, span = f"CAST(:cost AS {dbl})", f"CAST(:span AS {dbl})"
    # Only constants of this module are formatted in; every value is a bound parameter.
    # SQLite needs the WHERE to tell INSERT … SELECT … ON CONFLICT apart from a join.
    return f"""
        INSERT INTO {t} (bucket, tokens, granted, updated_at, expires_at)
        SELECT :bucket, CAST(:capacity AS {dbl}) - {cost}, TRUE, clock.t, clock.t + {span}
        FROM (SELECT {now} AS t) AS clock WHERE TRUE
        ON CONFLICT (bucket) DO UPDATE SET
            tokens = CASE WHEN {level} >= {cost} THEN {level} - {cost} ELSE {level} END,
            granted = ({level} >= {cost}),
            updated_at = excluded.updated_at,
            expires_at = excluded.expires_at
        RETURNING tokens, granted
    """  # noqa: S608


def _purge_sql(dialect: str) -> str:
    return f"""
        DELETE FROM rate_limit_buckets WHERE bucket IN (
            SELECT bucket FROM rate_limit_buckets
            WHERE expires_at < COALESCE(CAST(:now AS {_DOUBLE[dialect]}), {_CLOCK[dialect]})
            LIMIT :batch
        )
    """  # noqa: S608


class DatabaseBuckets:
    """Buckets in the ``rate_limit_buckets`` table of the region that serves the request."""

    def __init__(self, router: RegionRouter, *, purge_interval: float = PURGE_INTERVAL) -> None:
        self.router = router
        self.purge_interval = purge_interval
        self._last_purge: dict[str, float] = {}

    async def take(
        self, region: str, bucket: str, limit: RateLimit, *, cost: int = 1,
        now: float | None = None,
    ) -> Level:
        if not 0 < cost <= limit.capacity:
            raise ValueError("a request must cost between 1 token and the bucket's capacity")
        dialect = self.router.engine(region).dialect.name
        with map_database_errors():
            async with self.router.session(region) as session, session.begin():
                row = (await session.execute(text(_take_sql(dialect)), {
                    "bucket": bucket, "capacity": limit.capacity, "cost": cost,
                    "rate": limit.refill_per_second, "span": full_after(limit), "now": now,
                })).one()
            await self._maybe_purge(region, dialect)
        return Level(bool(row.granted), float(row.tokens))

    async def purge(self, region: str, *, batch: int = PURGE_BATCH,
                    now: float | None = None) -> int:
        """Delete up to ``batch`` expired buckets of ``region``; returns how many went."""
        dialect = self.router.engine(region).dialect.name
        with map_database_errors():
            async with self.router.session(region) as session, session.begin():
                result = await session.execute(text(_purge_sql(dialect)),
                                               {"batch": batch, "now": now})
        return int(getattr(result, "rowcount", 0) or 0)

    async def _maybe_purge(self, region: str, dialect: str) -> None:
        started = time.monotonic()
        if started - self._last_purge.setdefault(region, started) < self.purge_interval:
            return
        self._last_purge[region] = started
        try:
            deleted = await self.purge(region)
        except (RateLimitStoreUnavailable, SQLAlchemyError):
            log.warning("rate limit: purging expired buckets of region %s failed", region)
            return
        if deleted:
            log.info("rate limit: purged %d expired buckets of region %s", deleted, region)

    async def close(self) -> None:
        return None  # the router's engines belong to the services


class MemoryBuckets:
    """Buckets in this process only: for a single development process (see module doc)."""

    def __init__(self) -> None:
        log.warning("rate limit buckets are kept in this process's memory: every gateway "
                    "process grants the full budget; use the database or redis backend "
                    "for more than one process")
        #: (region, bucket) -> (tokens, updated, full again at)
        self._buckets: dict[tuple[str, str], tuple[float, float, float]] = {}
        self._lock = asyncio.Lock()

    async def take(
        self, region: str, bucket: str, limit: RateLimit, *, cost: int = 1,
        now: float | None = None,
    ) -> Level:
        if not 0 < cost <= limit.capacity:
            raise ValueError("a request must cost between 1 token and the bucket's capacity")
        clock = time.time() if now is None else now
        async with self._lock:
            tokens, updated, _ = self._buckets.get((region, bucket), (None, None, 0.0))
            level = take_tokens(tokens, updated, clock, limit, cost)
            self._buckets[(region, bucket)] = (level.tokens, clock, clock + full_after(limit))
            if len(self._buckets) > 100_000:  # bounded: forget buckets that are full again
                for key in [k for k, (*_, full) in self._buckets.items() if full < clock]:
                    del self._buckets[key]
        return level

    async def close(self) -> None:
        self._buckets.clear()
