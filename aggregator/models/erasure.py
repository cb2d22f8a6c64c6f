"""Erasure requests and their revocation records: what outlives the erased user.

An erasure request must survive the user it erases (it *is* the proof), so it holds no
foreign key to ``users`` and no personal data once done: ``user_id`` is kept only while
the job runs (a resumed job needs it) and cleared in the same transaction that writes the
receipt; from then on only ``user_digest``, an HMAC of the id under the region's pepper,
answers "was this user erased?". The job's progress is ``state``: each step commits its
work and the state advance together, so a crash resumes at the first unfinished step.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.ids import ApplicationId
from aggregator.models.base import ID_LENGTH, Base, app_column, digest_column, id_column
from aggregator.models.linking import _enum
from aggregator.models.types import UTCDateTime


class ErasureState(enum.Enum):
    """The last step an erasure request committed; steps run in this order.

    ``revoked``, ``deleted`` and ``shredded`` are no longer written (revocation commits
    per grant, and deleting, shredding and finishing share one transaction, see
    :mod:`aggregator.erasure.job`); requests an older release left in them still resume.
    """

    REQUESTED = "requested"  # accepted; the user is marked erasing, nothing else done yet
    STOPPED = "stopped"  # no new activity: connections revoked locally, leases voided
    REVOKED = "revoked"  # every grant was revoked at its bank, or the failure recorded
    DELETED = "deleted"  # every row of the user except the user row and its data key
    SHREDDED = "shredded"  # data key and user row deleted: sealed copies are dead
    COMPLETED = "completed"  # receipt written, user id forgotten, audit appended

    @property
    def done(self) -> bool:
        return self is ErasureState.COMPLETED


class RevocationOutcome(enum.Enum):
    """How revoking one connection's grant at its bank ended (so far)."""

    PENDING = "pending"  # not tried yet
    REVOKED = "revoked"  # the bank confirmed (RFC 7009 §2.2: 200, also for unknown tokens)
    FAILED = "failed"  # every attempt failed (unreachable, 5xx, refused); may be retried
    UNSUPPORTED = "unsupported"  # the bank offers no revocation endpoint
    NO_TOKEN = "no_token"  # noqa: S105 - an outcome: the connection held no token


class ErasureRequest(Base):
    """One data-subject erasure, from request to receipt (see the module docstring)."""

    __tablename__ = "erasure_requests"

    id: Mapped[str] = id_column(primary_key=True)
    application_id: Mapped[ApplicationId] = app_column()
    #: The user while the job runs; NULL once completed (the receipt must not hold it).
    user_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), info={"region": "id"}, index=True
    )
    #: HMAC-SHA256 of the user id under the region's pepper (purpose ``erased_user``).
    user_digest: Mapped[bytes] = digest_column(unique=True)
    state: Mapped[ErasureState] = mapped_column(_enum(ErasureState, "erasure_state"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The statutory deadline (GDPR Art. 12(3): one month; configurable).
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Rows deleted per table, written by the deletion and shredding steps.
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    runs: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: A short code for the last failure of a run (``bank_unavailable``), never free text.
    last_error: Mapped[str | None] = mapped_column(String(64))


class ErasureRevocation(Base):
    """Revoking one of the erased user's grants at its bank, with every attempt counted.

    ``token_escrow`` holds the token to revoke, encrypted under a key derived from the
    region's pepper for this request alone, so revocation can be retried after the user's
    data key is gone; it is cleared as soon as the bank confirms, and by
    :func:`aggregator.erasure.revocation.expire_escrow` when retries give up.
    """

    __tablename__ = "erasure_revocations"

    request_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("erasure_requests.id", ondelete="CASCADE"),
        primary_key=True, info={"region": "id"},
    )
    n: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: The connection while the job runs; NULL once the request completes.
    connection_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), info={"region": "id"})
    bank_id: Mapped[str] = mapped_column(String(64))
    #: The application's own client that holds the grant (NULL: the profile's static one).
    bank_client_id: Mapped[str | None] = mapped_column(String(255))
    token_type: Mapped[str | None] = mapped_column(String(16))
    token_escrow: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: The consent resource to delete at the bank (connectors/consents), if any.
    consent_id: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[RevocationOutcome] = mapped_column(
        _enum(RevocationOutcome, "revocation_outcome")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(String(64))
    #: A refresh was in flight when activity stopped: the bank may have rotated the token.
    raced_refresh: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
