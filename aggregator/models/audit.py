"""The audit trail's rows; the chain's rules live in :mod:`aggregator.audit`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.ids import AuditEventId
from aggregator.models.base import ID_LENGTH, Base, id_column
from aggregator.models.types import UTCDateTime


class AuditEvent(Base):
    """One append-only event; ``seq`` is its position in the region's chain (1, 2, …)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    id: Mapped[AuditEventId] = id_column(unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(ID_LENGTH), info={"region": "any"})
    action: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), info={"region": "any"})
    request_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditHead(Base):
    """The single row naming the chain's last event: appenders lock it to take turns."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
