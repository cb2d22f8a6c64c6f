"""What the console and ``/metrics`` read of bank health, one region's session at a time.

Error rate: calls whose outcome says the bank failed (:data:`FAILURES`) over the calls
that reached it. p95: the upper bound of the histogram bucket where the 95th percentile
falls (``None`` for no calls; ``inf`` when it lies above the last bound), which is as
precise as the fixed buckets (:data:`aggregator.models.bankhealth.BUCKETS`) allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.models.bankhealth import (
    BUCKET_COLUMNS,
    BUCKETS,
    BankCallMinute,
    BreakerHeartbeat,
    RefreshAttempt,
)

#: Outcomes that count against the bank: it was down, slow, throttling or answered
#: nonsense (a refused grant or a missing permission is a proper answer).
FAILURES = frozenset({"unavailable", "rate_limited", "protocol_error", "error",
                      "bank_unavailable", "bank_protocol_error", "response_too_large",
                      "connector_error"})
#: A heartbeat older than this belongs to a process that stopped or lost its database.
STALE = timedelta(seconds=60)
#: Breaker states, least to most severe (aggregator/worker/breaker.py, BreakerState).
BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}


@dataclass
class Summary:
    """Calls of one bank and operation over a window."""

    calls: int = 0
    failures: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.calls if self.calls else None

    @property
    def p95(self) -> float | None:
        return quantile(self.calls, self.buckets, 0.95)

    @property
    def mean(self) -> float | None:
        return self.seconds / self.calls if self.calls else None


def quantile(calls: int, buckets: list[int], q: float) -> float | None:
    """The bucket bound at or below which ``q`` of ``calls`` fell."""
    if not calls:
        return None
    target, seen = math.ceil(q * calls), 0
    for bound, n in zip(BUCKETS, buckets, strict=True):
        seen += n
        if seen >= target:
            return bound
    return math.inf


def _columns() -> list[ColumnElement[int]]:
    m = BankCallMinute
    return [func.sum(getattr(m, name)) for name in BUCKET_COLUMNS]


def _add(summary: Summary, outcome: str, calls: int, seconds: float,
         buckets: list[int]) -> None:
    summary.calls += calls
    summary.seconds += seconds
    summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + calls
    if outcome in FAILURES:
        summary.failures += calls
    summary.buckets = [a + (b or 0) for a, b in zip(summary.buckets, buckets, strict=True)]


async def last_hour(session: AsyncSession, now: datetime
                    ) -> dict[str, dict[str, Summary]]:
    """bank -> operation -> :class:`Summary` of the last hour."""
    m = BankCallMinute
    rows = await session.execute(
        select(m.bank_id, m.operation, m.outcome, func.sum(m.calls), func.sum(m.seconds),
               *_columns())
        .where(m.minute >= now - timedelta(hours=1))
        .group_by(m.bank_id, m.operation, m.outcome))
    out: dict[str, dict[str, Summary]] = {}
    for bank, operation, outcome, calls, seconds, *buckets in rows:
        _add(out.setdefault(bank, {}).setdefault(operation, Summary()), outcome,
             int(calls or 0), float(seconds or 0.0), [int(b or 0) for b in buckets])
    return out


def _hour_of(session: AsyncSession) -> ColumnElement[str]:
    """``YYYY-MM-DDTHH`` of a minute, in UTC, in the session's dialect."""
    m = BankCallMinute
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", m.minute), 'YYYY-MM-DD"T"HH24')
    return func.strftime("%Y-%m-%dT%H", m.minute)


async def hourly(session: AsyncSession, now: datetime, hours: int = 24
                 ) -> dict[str, dict[str, dict[str, Summary]]]:
    """bank -> operation -> hour (``YYYY-MM-DDTHH``, UTC) -> :class:`Summary`."""
    m = BankCallMinute
    hour = _hour_of(session).label("hour")
    since = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    rows = await session.execute(
        select(m.bank_id, m.operation, hour, m.outcome, func.sum(m.calls),
               func.sum(m.seconds), *_columns())
        .where(m.minute >= since)
        .group_by(m.bank_id, m.operation, hour, m.outcome))
    out: dict[str, dict[str, dict[str, Summary]]] = {}
    for bank, operation, at, outcome, calls, seconds, *buckets in rows:
        summary = out.setdefault(bank, {}).setdefault(operation, {}).setdefault(at, Summary())
        _add(summary, outcome, int(calls or 0), float(seconds or 0.0),
             [int(b or 0) for b in buckets])
    return out


@dataclass(frozen=True)
class BreakerView:
    """The worst live state of a bank's breakers, and how many processes report it."""

    state: str
    reporting: int  # processes whose breaker is in ``state``
    live: int  # processes with a live heartbeat for the bank
    since: datetime


async def breakers(session: AsyncSession, now: datetime) -> dict[str, BreakerView]:
    """bank -> :class:`BreakerView`, from heartbeats younger than :data:`STALE`."""
    h = BreakerHeartbeat
    rows = (await session.execute(
        select(h.bank_id, h.state, h.since).where(h.seen_at >= now - STALE)
    )).all()
    by_bank: dict[str, list[tuple[str, datetime]]] = {}
    for bank, state, since in rows:
        by_bank.setdefault(bank, []).append((state, since))
    out = {}
    for bank, states in by_bank.items():
        worst = max((s for s, _ in states), key=lambda s: BREAKER_LEVELS.get(s, -1))
        at = min(since for s, since in states if s == worst)
        out[bank] = BreakerView(worst, sum(1 for s, _ in states if s == worst),
                                len(states), at)
    return out


async def refresh_history(session: AsyncSession, connection_id: str, limit: int = 50
                          ) -> list[RefreshAttempt]:
    """The connection's latest refresh attempts, newest first."""
    r = RefreshAttempt
    return list((await session.execute(
        select(r).where(r.connection_id == connection_id)
        .order_by(r.attempted_at.desc(), r.seq.desc()).limit(limit)
    )).scalars())


def refresh_class(outcome: str) -> str:
    """The chart's class of a refresh outcome: ``ok``, ``failed``, ``refused``, ``other``."""
    if outcome == "ok":
        return "ok"
    if outcome in FAILURES:
        return "failed"
    return "refused" if outcome == "invalid_grant" else "other"


@dataclass
class RegionHealth:
    """One region's bank health, as the Banks page and ``/metrics`` show it."""

    last_hour: dict[str, dict[str, Summary]]
    hourly: dict[str, dict[str, dict[str, Summary]]]
    breakers: dict[str, BreakerView]


async def region_health(session: AsyncSession, now: datetime, hours: int = 24
                        ) -> RegionHealth:
    return RegionHealth(await last_hour(session, now), await hourly(session, now, hours),
                        await breakers(session, now))
