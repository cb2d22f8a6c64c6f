"""Token buckets of the API rate limiter, one row per (route class, subject).

The row is the whole bucket: the tokens left at ``updated_at`` (seconds since the epoch,
by the database's clock, so gateways on several machines agree on time), and whether
the last request was granted, which the single-statement upsert of
:mod:`aggregator.http.ratelimit.database` returns (PostgreSQL 15 cannot ``RETURNING``
the old row). A row past ``expires_at`` is a full bucket, the same as no row: the purge
deletes it.

``bucket`` names the class and the subject: ``read:app_…`` for an application (ids of
applications are global configuration, no personal data), ``link:ip:<hex>`` for a
client address, as an HMAC under the region's pepper, never the address itself.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Double, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.models.base import Base

BUCKET_LENGTH = 96


class RateLimitBucket(Base):
    """One token bucket; see the module docstring."""

    __tablename__ = "rate_limit_buckets"
    __table_args__ = (Index(None, "expires_at"),)

    bucket: Mapped[str] = mapped_column(String(BUCKET_LENGTH), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    granted: Mapped[bool] = mapped_column(Boolean)
    #: Seconds since the epoch (UTC), as the database's clock read them.
    updated_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
