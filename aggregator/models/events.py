"""The outbox of outbound events: each row is an event and its delivery job at once.

A row is inserted by :func:`aggregator.events.emit` in the transaction of the change it
describes, so a rolled-back change leaves no event and a committed one always has its
event. Delivery state lives on the same row; ``next_attempt_at`` doubles as the lease
(a worker pushes it forward while it delivers, :mod:`aggregator.events.delivery`).

``user_id`` references ``users`` with ``ON DELETE CASCADE``: erasing a user deletes the
events about them with everything else they own (``user.erased`` itself names no user).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.ids import ApplicationId, OutboundEventId, UserId
from aggregator.models.base import Base, app_column, created_column, id_column, ref_column
from aggregator.models.types import UTCDateTime


class OutboundEvent(Base):
    """One event for an application's backend; payload is ids, codes and counts only.

    Delivery state: pending while ``next_attempt_at`` is set, delivered once
    ``delivered_at`` is (a redelivery sets ``next_attempt_at`` again), failed when both
    are NULL after retries ran out (``last_error`` says why).
    """

    __tablename__ = "outbound_events"
    __table_args__ = (Index(None, "application_id", "created_at", "id"),)

    id: Mapped[OutboundEventId] = id_column(primary_key=True)
    application_id: Mapped[ApplicationId] = app_column(index=False)
    user_id: Mapped[UserId | None] = ref_column("users.id", nullable=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = created_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The receiver's HTTP status of the last attempt; NULL if none answered.
    last_status: Mapped[int | None] = mapped_column(Integer)
    #: A short code for the last failure (``timeout``, ``connect``, ``no_endpoint``).
    last_error: Mapped[str | None] = mapped_column(String(32))
