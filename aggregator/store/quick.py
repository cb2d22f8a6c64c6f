"""Quick reads: the app-facing hot reads without an ORM session around them.

Why (docs/architecture.md, "The read path"): on PostgreSQL, one ``SELECT`` through an
ORM session costs ~0.9 ms of gateway CPU (checkout, ``BEGIN``, statement compilation and
cache key, ORM row loading, ``ROLLBACK`` and check-in), and ~0.07 ms on a bare psycopg
connection; `GET …/accounts` made five. So the three reads apps poll —
accounts, the transaction list and ``/transactions/sync`` — run their statements here:

- on PostgreSQL through a small psycopg pool of **autocommit** connections (each
  statement sees its own READ COMMITTED snapshot; every quick read is a set of
  statements whose answers are each consistent on their own, see the callers), with
  the SQL compiled once per statement from the same SQLAlchemy Core expression the
  models define, and prepared by psycopg after its fifth use;
- on SQLite (the embedded default, one process, no network) through the region's
  ordinary reader session, so both dialects run the same statement.

Rows come back as named tuples in the statement's column order (index or attribute
access, as SQLAlchemy's rows allow). Values are the driver's:
on PostgreSQL enum columns arrive as their stored text and instants as aware UTC
datetimes (the pool's sessions run with ``TimeZone=UTC``); on SQLite SQLAlchemy's types
have already processed them. Callers normalise with the enum class (``AccountType(x)``
accepts both) and never depend on the difference.

The residency rule holds by construction: a :class:`QuickReader` belongs to one region
and its pool connects to that region's database only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.sql import ClauseElement

#: Connections per region for quick reads, per process. Sixteen concurrent polls share
#: them without opening and closing server connections per request (which the ORM pool's
#: overflow did: bench/README.md); a deployment runs few gateway processes per region.
POOL_MAX = 10
POOL_MIN = 1
#: A connection idle this long is closed; one older than this is replaced on check-in.
MAX_IDLE_SECONDS = 300.0
MAX_LIFETIME_SECONDS = 1800.0
#: How long a read waits for a connection (or for the pool's first one) before it fails:
#: a region whose database is down answers within this, not after psycopg-pool's 30 s.
CONNECT_TIMEOUT_SECONDS = 5.0

_DIALECT = pg_psycopg.dialect()  # type: ignore[no-untyped-call]


class QuickReader:
    """Runs read-only Core statements in one region; see the module docstring."""

    def __init__(self, region: str, url: str, session_factory: Any) -> None:
        self.region = region
        parsed = make_url(url)
        self._postgres = parsed.get_backend_name() == "postgresql"
        self._sessions = session_factory
        self._sql: dict[int, tuple[ClauseElement, str]] = {}
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._opening = asyncio.Lock()
        if self._postgres:
            # The URL's own libpq ``options`` (a search_path, say) are kept, and ours added.
            options = parsed.query.get("options", "")
            self._options = " ".join(
                [*([options] if isinstance(options, str) else options), "-c TimeZone=UTC"])
            self._conninfo = parsed.set(drivername="postgresql").difference_update_query(
                ["options"]).render_as_string(hide_password=False)

    async def rows(self, statement: ClauseElement, params: Mapping[str, Any] | None = None
                   ) -> Sequence[Any]:
        """The statement's rows; ``params`` fill its ``bindparam`` placeholders."""
        (found,) = await self.rows_of([(statement, params or {})])
        return found

    async def rows_of(self, statements: Sequence[tuple[ClauseElement, Mapping[str, Any]]]
                      ) -> list[Sequence[Any]]:
        """Each statement's rows, in order, from one connection.

        On PostgreSQL the statements go out together in pipeline mode: one round trip
        and one pool checkout for all of them instead of one each. Each still runs in its
        own autocommit snapshot.
        """
        if not self._postgres:
            async with self._sessions() as session:
                return [(await session.execute(statement, dict(params))).all()
                        for statement, params in statements]
        compiled = [(self._compiled(statement), params) for statement, params in statements]
        pool = self._pool or await self._open()
        for attempt in (1, 2):
            try:
                async with pool.connection() as connection:
                    if len(compiled) == 1:
                        sql, params = compiled[0]
                        return [await (await connection.execute(sql, params)).fetchall()]
                    async with connection.pipeline():
                        cursors = [await connection.execute(sql, params)
                                   for sql, params in compiled]
                    return [await cursor.fetchall() for cursor in cursors]
            except psycopg.OperationalError:
                # A server restart or a dropped idle connection: the pool discards the
                # broken connection on check-in; a read is safe to send once more.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _compiled(self, statement: ClauseElement) -> str:
        # Keyed on identity: quick statements are module constants built once. The entry
        # keeps the statement alive, so an id is never reused for another statement.
        found = self._sql.get(id(statement))
        if found is None:
            text = str(statement.compile(dialect=_DIALECT))
            found = self._sql[id(statement)] = (statement, text)
        return found[1]

    async def _open(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        async with self._opening:
            if self._pool is None:
                pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                    self._conninfo, min_size=POOL_MIN, max_size=POOL_MAX,
                    kwargs={"autocommit": True, "options": self._options,
                            "row_factory": namedtuple_row,
                            "application_name": f"aggregator-quick-{self.region}"},
                    max_idle=MAX_IDLE_SECONDS, max_lifetime=MAX_LIFETIME_SECONDS,
                    name=f"quick-{self.region}", open=False,
                    timeout=CONNECT_TIMEOUT_SECONDS,
                )
                try:
                    await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
                except BaseException:
                    await pool.close()  # stop its reconnection attempts; the next read retries
                    raise
                self._pool = pool
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
