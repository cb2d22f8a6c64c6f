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

from sqlalchemy import Integer, String
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
