"""The writes of bank health: batched tallies, breaker heartbeats, pruning.

Every function touches one region's database. Tallies are *added* to the stored row
(``INSERT … ON CONFLICT DO UPDATE SET calls = calls + excluded.calls``, on PostgreSQL
and SQLite alike), so flushes of many processes into one minute compose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from aggregator.models import Connection
from aggregator.models.bankhealth import (
    BUCKET_COLUMNS,
    BankCallMinute,
    BreakerHeartbeat,
    RefreshAttempt,
)
from aggregator.models.base import table_of, utcnow
from aggregator.store import RegionRouter

_minutes = table_of(BankCallMinute)
_heartbeats = table_of(BreakerHeartbeat)
_attempts = table_of(RefreshAttempt)

#: How long each kind of row is kept.
CALL_RETENTION = timedelta(days=7)
ATTEMPT_RETENTION = timedelta(days=30)
HEARTBEAT_RETENTION = timedelta(days=1)
_IDS_PER_QUERY = 500


def _insert(dialect: str, table: Any) -> Insert:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def _add_tallies(dialect: str) -> Insert:
    stmt = _insert(dialect, _minutes)
    excluded = stmt.excluded  # type: ignore[attr-defined]
    added = {name: _minutes.c[name] + excluded[name]
             for name in ("calls", "seconds", *BUCKET_COLUMNS)}
    return stmt.on_conflict_do_update(  # type: ignore[attr-defined, no-any-return]
        index_elements=["bank_id", "operation", "minute", "outcome"], set_=added)


async def write_batch(router: RegionRouter, region: str, tallies: Sequence[dict[str, Any]],
                      attempts: Sequence[dict[str, Any]]) -> int:
    """One transaction: add ``tallies`` to their minutes, insert ``attempts`` (those of
    connections that still exist: one erased meanwhile leaves no history behind)."""
    dialect = router.engine(region).dialect.name
    async with router.session(region) as session, session.begin():
        if tallies:
            await session.execute(_add_tallies(dialect), list(tallies))
        kept: list[dict[str, Any]] = []
        if attempts:
            ids = sorted({a["connection_id"] for a in attempts})
            alive: set[str] = set()
            for at in range(0, len(ids), _IDS_PER_QUERY):  # SQLite caps bound parameters
                alive.update((await session.execute(select(Connection.id).where(
                    Connection.id.in_(ids[at:at + _IDS_PER_QUERY])))).scalars())
            kept = [a for a in attempts if a["connection_id"] in alive]
            if kept:
                await session.execute(insert(_attempts), kept)
    return len(tallies) + len(kept)


async def publish_breakers(router: RegionRouter, region: str, process_id: str,
                           states: Mapping[str, tuple[str, datetime]],
                           now: datetime | None = None) -> None:
    """Renew this process's heartbeat rows: bank -> (state, since)."""
    if not states:
        return
    now = now or utcnow()
    stmt = _insert(router.engine(region).dialect.name, _heartbeats)
    excluded = stmt.excluded  # type: ignore[attr-defined]
    upsert = stmt.on_conflict_do_update(  # type: ignore[attr-defined]
        index_elements=["process_id", "bank_id"],
        set_={"state": excluded.state, "since": excluded.since, "seen_at": excluded.seen_at})
    rows = [{"process_id": process_id[:64], "bank_id": bank, "state": state, "since": since,
             "seen_at": now} for bank, (state, since) in sorted(states.items())]
    async with router.session(region) as session, session.begin():
        await session.execute(upsert, rows)


async def withdraw_breakers(router: RegionRouter, region: str, process_id: str) -> None:
    """A stopping process removes its heartbeats (readers need not wait for staleness)."""
    async with router.session(region) as session, session.begin():
        await session.execute(delete(_heartbeats).where(
            _heartbeats.c.process_id == process_id[:64]))


async def prune(router: RegionRouter, region: str, now: datetime | None = None) -> int:
    """Delete what is past its retention; returns rows deleted. Each statement walks an
    index on its time column."""
    now = now or utcnow()
    deleted = 0
    async with router.session(region) as session, session.begin():
        for stmt in (
            delete(_minutes).where(_minutes.c.minute < now - CALL_RETENTION),
            delete(_attempts).where(_attempts.c.attempted_at < now - ATTEMPT_RETENTION),
            delete(_heartbeats).where(_heartbeats.c.seen_at < now - HEARTBEAT_RETENTION),
        ):
            result = await session.execute(stmt)
            deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted
