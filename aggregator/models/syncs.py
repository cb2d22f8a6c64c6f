"""What each sync of a connection did, and how fresh each resource of an account is.

A *sync run* is one attempt to bring a connection up to date (:mod:`aggregator.sync.job`):
when it started and ended, its outcome, and per account and resource (``balances``,
``transactions``) what the bank answered, with the bank's id for that call
(``x-fapi-interaction-id``, ``X-Request-ID``) for a support ticket. An *account
resource* row keeps the latest outcome of one resource of one account and when it was
last read successfully: what the API calls the account's freshness.

Nothing here is personal data, so it stays in clear: our own ids, short error codes of
our own vocabulary, counts, instants and the bank's request ids (opaque, at most 64
characters). Both tables reach the user through ``ON DELETE CASCADE``, so erasure takes
them along.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.ids import AccountId, ConnectionId, SyncRunId, UserId
from aggregator.models.base import Base, id_column, ref_column
from aggregator.models.linking import _enum
from aggregator.models.types import UTCDateTime


class SyncOutcome(enum.Enum):
    """How a sync run ended."""

    COMPLETE = "complete"  # every resource the bank offers was read and committed
    PARTIAL = "partial"  # the account list was read; some resource was refused or failed
    FAILED = "failed"  # nothing was committed (no token, account list unreadable, outage)


class ResourceOutcome(enum.Enum):
    """What the bank answered for one resource of one account."""

    OK = "ok"  # read and committed
    NOT_PERMITTED = "not_permitted"  # 403: the consent lacks the permission
    NOT_OFFERED = "not_offered"  # 404/501, or the bank profile does not list it
    FAILED = "failed"  # a malformed or unexpected answer; ``error_code`` says which


class SyncRun(Base):
    """One sync of a connection, written when it ends (in the transaction that commits it).

    ``resources`` lists, per account and resource, ``{"account_id", "resource",
    "outcome", "error_code", "request_id"}``; ``request_id`` is the bank's id of the
    account-list call, or of the call that failed the run.
    """

    __tablename__ = "sync_runs"
    __table_args__ = (Index(None, "connection_id", "started_at", "id"),)

    id: Mapped[SyncRunId] = id_column(primary_key=True)
    connection_id: Mapped[ConnectionId] = ref_column("connections.id", index=False)
    user_id: Mapped[UserId] = ref_column("users.id")
    #: ``link``, ``on_demand``, ``scheduled`` or ``webhook``.
    trigger: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[SyncOutcome] = mapped_column(_enum(SyncOutcome, "sync_outcome"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    accounts: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    modified: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    resources: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class AccountResource(Base):
    """The latest outcome of one resource of one account, and its last successful read."""

    __tablename__ = "account_resources"

    account_id: Mapped[AccountId] = ref_column("accounts.id", primary_key=True, index=False)
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[UserId] = ref_column("users.id")
    outcome: Mapped[ResourceOutcome] = mapped_column(
        _enum(ResourceOutcome, "resource_outcome"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    #: When the bank last answered this resource successfully; NULL if it never did.
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
