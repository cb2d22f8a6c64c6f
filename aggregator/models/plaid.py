"""Verified Plaid webhooks, stored with their job state: the table is the outbox.

A webhook row is inserted in the receiver's transaction with ``status = pending``, which
*is* the job the worker claims; there is no window where an event exists without its
job or a job without its event. Rows are keyed by the SHA-256 of the verified body: a
delivery identical to a still-pending row is coalesced into it (``redelivered_at``), and
one identical to an applied row re-arms that row as a new notification
(:mod:`aggregator.plaid.receiver`), so the table holds one row per distinct body.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.ids import ConnectionId
from aggregator.models.base import Base, created_column, digest_column, ref_column
from aggregator.models.linking import _enum
from aggregator.models.types import UTCDateTime


class WebhookStatus(enum.Enum):
    """Where a stored webhook stands."""

    PENDING = "pending"  # verified and stored; the worker has yet to apply it
    APPLIED = "applied"  # the worker acted on it (or acknowledged it: nothing to do)
    ORPHANED = "orphaned"  # no connection of this region has the item; never applied


class PlaidWebhookEvent(Base):
    """One verified Plaid webhook; its body holds Plaid's codes and ids, no account data."""

    __tablename__ = "plaid_webhook_events"
    __table_args__ = (
        Index(None, "status", "available_at"),
        Index(None, "status", "received_at"),  # the worker's purge of old applied rows
    )

    #: SHA-256 of the verified raw body: one row per distinct body (repeats re-arm it).
    body_sha256: Mapped[bytes] = digest_column(primary_key=True)
    region: Mapped[str] = mapped_column(String(8), info={"region": "name"})
    item_id: Mapped[str | None] = mapped_column(String(255), index=True)
    connection_id: Mapped[ConnectionId | None] = ref_column("connections.id", nullable=True)
    webhook_type: Mapped[str] = mapped_column(String(64))
    webhook_code: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = created_column()
    status: Mapped[WebhookStatus] = mapped_column(_enum(WebhookStatus, "webhook_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: What applying it did (``reauth_required``, ``acknowledged``…), a code, never text.
    outcome: Mapped[str | None] = mapped_column(String(32))
    #: When an identical delivery was last coalesced into this row while it was pending;
    #: a sync already running then is followed by another one.
    redelivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
