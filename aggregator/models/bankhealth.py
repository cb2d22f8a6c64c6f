"""How each bank has been answering: call outcomes per minute, breaker heartbeats, and
each connection's refresh attempts (docs/architecture.md, "Bank health").

None of it is personal data. ``bank_call_minutes`` holds counts per bank, minute,
operation and outcome, with a latency sum and fixed histogram buckets (so a p95 can be
read without keeping every call); ``breaker_heartbeats`` holds each process's view of
each bank's circuit breaker; ``refresh_attempts`` keeps, per connection, when a refresh
was tried, how it ended and which worker tried it: our ids, short codes of our own
vocabulary and instants, never token material. ``refresh_attempts`` reaches the user
through ``ON DELETE CASCADE`` (and erasure deletes every table with a ``user_id``), the
others name no user at all. Every table is pruned after a retention
(:mod:`aggregator.bankhealth.store`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.ids import ConnectionId, UserId
from aggregator.models.base import Base, ref_column
from aggregator.models.types import UTCDateTime

#: Upper bounds (seconds) of the latency buckets; the last bucket is everything above.
#: Token endpoints answer in 50-500 ms and time out at 10 s; a sync takes a few seconds.
BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The column of each bucket, in :data:`BUCKETS` order (calls in (previous bound, bound]).
BUCKET_COLUMNS: tuple[str, ...] = ("le_100ms", "le_250ms", "le_500ms", "le_1s", "le_2500ms",
                                   "le_5s", "le_10s")


class BankCallMinute(Base):
    """One bank's calls of one operation in one minute that ended with one outcome.

    Written by :class:`aggregator.bankhealth.CallRecorder` as increments (an upsert adds
    to the row), so any number of processes may flush into the same minute. Calls slower
    than the last bound are ``calls`` minus the buckets' sum.
    """

    __tablename__ = "bank_call_minutes"
    __table_args__ = (Index(None, "minute"),)

    bank_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operation: Mapped[str] = mapped_column(String(16), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    calls: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)  # latency sum
    le_100ms: Mapped[int] = mapped_column(Integer)
    le_250ms: Mapped[int] = mapped_column(Integer)
    le_500ms: Mapped[int] = mapped_column(Integer)
    le_1s: Mapped[int] = mapped_column(Integer)
    le_2500ms: Mapped[int] = mapped_column(Integer)
    le_5s: Mapped[int] = mapped_column(Integer)
    le_10s: Mapped[int] = mapped_column(Integer)


class BreakerHeartbeat(Base):
    """What one process's breaker for one bank says, renewed every few seconds.

    ``since`` is when that process saw the breaker enter ``state``; ``seen_at`` is the
    last heartbeat: a row older than :data:`aggregator.bankhealth.STALE` belongs to a
    process that stopped (or lost its database) and is ignored by readers.
    """

    __tablename__ = "breaker_heartbeats"
    __table_args__ = (Index(None, "seen_at"),)

    process_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bank_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RefreshAttempt(Base):
    """One try at refreshing a connection's tokens: when, how it ended, by which worker.

    ``outcome`` is one of :data:`aggregator.worker.metrics.OUTCOMES`; ``error_code`` the
    connector error's code when one was raised (``bank_unavailable``), else NULL.
    """

    __tablename__ = "refresh_attempts"
    __table_args__ = (Index(None, "connection_id", "attempted_at", "seq"),
                      Index(None, "attempted_at"))

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"),
                                     primary_key=True, autoincrement=True)
    connection_id: Mapped[ConnectionId] = ref_column("connections.id", index=False)
    user_id: Mapped[UserId] = ref_column("users.id")
    bank_id: Mapped[str] = mapped_column(String(64))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str] = mapped_column(String(64))
