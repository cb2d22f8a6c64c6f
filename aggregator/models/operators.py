"""Operator accounts of the console and their sign-in sessions, replicated like applications.

Both tables hold no personal data of end users and no secret in clear: an operator's
password is kept only as an argon2id hash (RFC 9106), a session only as the SHA-256 of
its 256-bit cookie token. Where they live, and why, is :mod:`aggregator.operators`.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.models.base import ID_LENGTH, Base, created_column, digest_column
from aggregator.models.linking import _enum
from aggregator.models.types import UTCDateTime


class OperatorRole(enum.Enum):
    """What an operator may do in the console."""

    VIEWER = "viewer"  # reads every page; no action that changes anything
    ADMIN = "admin"  # also triggers syncs, redelivers events, starts erasures, retries


class Operator(Base):
    """A person who runs the gateway; ``id`` is global (``opr_…``), like an application's."""

    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    #: The sign-in name: a short handle (``[a-z0-9._-]``), not an email address.
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[OperatorRole] = mapped_column(_enum(OperatorRole, "operator_role"))
    #: The argon2id PHC string (``$argon2id$v=19$m=…``): salt and parameters included.
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = created_column()
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OperatorSession(Base):
    """One signed-in browser: found by the digest of its ``__Host-`` cookie's token."""

    __tablename__ = "operator_sessions"

    token_digest: Mapped[bytes] = digest_column(primary_key=True)
    operator_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    created_at: Mapped[datetime] = created_column()
    #: Moved forward while the operator works (at most once a minute): the idle timeout.
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The absolute end, whatever the activity.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
