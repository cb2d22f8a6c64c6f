"""The region KEK's rotation schedule, and the lease of the worker acting on it.

One row per KEK (one per region database). ``version`` is the newest KEK version this
database knows of and ``rotated_at`` when it appeared: the worker rotates again once
``rotated_at + keys.rotate_every`` has passed, and adopts (with the time it noticed) a
version made elsewhere (``aggregator keys rotate``, or a worker that died between the
provider's rotation and its commit). The lease (``lease_owner``, ``lease_expires_at``)
makes one worker at a time rotate and rewrap; a dead worker's lease simply expires.
Which data keys still need rewrapping is not stored: it is every ``data_keys`` row whose
``kek_version`` is below the newest version.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.models.base import Base
from aggregator.models.types import UTCDateTime


class KekRotation(Base):
    """When the region's KEK was last rotated, and who is rotating or rewrapping now."""

    __tablename__ = "kek_rotations"

    kek_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    region: Mapped[str] = mapped_column(String(8), info={"region": "name"})
    provider: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    rotated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DataKeyErasure(Base):
    """A data key destroyed by erasure, so that other processes drop their cached copy.

    :meth:`aggregator.datakeys.DataKeys.destroy` writes one row in the erasure's own
    transaction; every process polls the rows after the last ``seq`` it has seen
    (:meth:`~aggregator.datakeys.DataKeys.notice_erasures`) and forgets those keys. Rows
    older than a day are deleted by later erasures: caches expire within minutes.
    """

    __tablename__ = "data_key_erasures"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    #: SHA-256 of the destroyed key's id: the id names the user, which erasure must not
    #: leave behind; a process compares it with the ids it has cached.
    dek_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
