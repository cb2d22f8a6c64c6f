"""Idempotency keys: the first answer to a request, kept for retries of the same request.

One row per application and key, in the region of the resource the request concerns
(:mod:`aggregator.idempotency`). Nothing in it is readable from a database dump alone:
the key and the request are keyed hashes under the region's pepper, and the stored
answer is AES-256-GCM under a key derived from the pepper (it may hold a secret shown
once, a link token, or an app's own id for its user). ``user_id`` names the user the
answer is about once the request succeeded, so erasure deletes the row with the user's
other rows (``ON DELETE CASCADE`` and :func:`aggregator.erasure.steps.user_tables`).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.ids import ApplicationId, UserId
from aggregator.models.base import (
    ID_LENGTH,
    Base,
    app_column,
    digest_column,
    ref_column,
    sealed_column,
)
from aggregator.models.linking import _enum
from aggregator.models.types import UTCDateTime


class IdempotencyState(enum.Enum):
    """Where the first request with a key stands."""

    IN_PROGRESS = "in_progress"  # claimed: the first request is doing the work now
    COMPLETED = "completed"  # the answer is stored: retries replay it until expires_at


class IdempotencyRecord(Base):
    """A claimed or answered ``Idempotency-Key`` of one application.

    ``owner`` is the claiming request's random token: completing or releasing the claim
    is a compare-and-set on it, so a request whose lock expired and was taken over
    cannot overwrite its successor's answer.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index(None, "expires_at"),)

    application_id: Mapped[ApplicationId] = app_column(primary_key=True, index=False)
    #: HMAC-SHA256 of (application, key) under the region's pepper: a key is the client's
    #: choice of text and may hold anything, so it is never stored in clear.
    key_digest: Mapped[bytes] = digest_column(primary_key=True)
    #: HMAC-SHA256 of (application, method, path, query, canonical JSON body).
    fingerprint: Mapped[bytes] = digest_column()
    state: Mapped[IdempotencyState] = mapped_column(_enum(IdempotencyState, "idempotency_state"))
    owner: Mapped[str] = mapped_column(String(32))
    #: While in progress: after this instant the claim is presumed dead (a crashed
    #: request) and the next retry may take it over.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[int | None] = mapped_column(Integer)
    #: The answer's headers that matter and its body, sealed (see the module docstring)
    #: under a key derived from the region's pepper: for answers about no user.
    response_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: An answer about a user (``user_id`` set), sealed under that user's data key instead,
    #: so that erasure, which destroys the key, makes every copy of it unreadable.
    response_user_sealed: Mapped[bytes | None] = sealed_column()
    #: The request id of the request that did the work (``req_…``), for support.
    request_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    user_id: Mapped[UserId | None] = ref_column("users.id", nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
