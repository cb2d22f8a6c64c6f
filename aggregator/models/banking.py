"""What a connection syncs: accounts, their balances and transactions, and sync state.

Amounts, dates, currencies and statuses stay in clear so they can be queried; account
identifiers, holder names, descriptions and counterparties are sealed
(docs/architecture.md, "Secrets at rest"). Signs follow the account holder, as in
:mod:`connectors.models`: negative is money leaving the account.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aggregator.ids import AccountId, ConnectionId, TransactionId, UserId
from aggregator.models.base import (
    Base,
    created_column,
    digest_column,
    id_column,
    ref_column,
    sealed_column,
    updated_column,
)
from aggregator.models.linking import Connection, _enum
from aggregator.models.tenancy import User
from aggregator.models.types import Money, UTCDateTime


class AccountType(enum.Enum):
    """The stored account types; the same values as :class:`connectors.models.AccountType`."""

    CHECKING = "checking"  # current/payment account used for day-to-day spending
    SAVINGS = "savings"  # deposit account, possibly with notice or limited withdrawals
    CREDIT_CARD = "credit_card"  # revolving card credit; balances are usually negative
    LOAN = "loan"  # instalment credit, mortgages included; balance is what is owed
    OTHER = "other"  # e-money, prepaid cards and anything the bank does not classify


#: The newest-first page order of an account's transactions: undated entries (some
#: pending ones) sort as the newest. A SQL constant, so the page query and the index
#: ``ix_transactions_account_page`` are the same expression and the planner matches them.
PAGE_ORDER = "coalesce(booked_on, value_on, '9999-12-31')"


class TransactionStatus(enum.Enum):
    """Whether the bank has posted the entry."""

    BOOKED = "booked"  # posted to the ledger; amount and id are final
    PENDING = "pending"  # authorised, not posted; may be replaced by a booked entry


def _currency(column: str) -> CheckConstraint:
    return CheckConstraint(f"length({column}) = 3", name=f"{column}_iso4217")


class Account(Base):
    """An account reached through a connection.

    ``identifier_digest`` is the keyed hash of the normalised full identifier (IBAN,
    account number): it finds "the same account under another connection" without the
    number ever being stored in clear.
    """

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("connection_id", "bank_account_id"),
        _currency("currency"),
    )

    id: Mapped[AccountId] = id_column(primary_key=True)
    connection_id: Mapped[ConnectionId] = ref_column("connections.id")
    user_id: Mapped[UserId] = ref_column("users.id")
    #: The bank's resource id for the account: opaque, used to match on re-sync.
    bank_account_id: Mapped[str] = mapped_column(String(255))
    #: Legacy clear name: written as "" since the name is sealed (``name_sealed``); rows
    #: from before are sealed and cleared by ``aggregator migrate`` (aggregator.account_names).
    name: Mapped[str] = mapped_column(String(255))
    #: The bank's account name (Berlin Group ``name``/``displayName``, OBIE ``Nickname``,
    #: Plaid ``name``): often the holder's name, so personal data, sealed.
    name_sealed: Mapped[bytes | None] = sealed_column()
    type: Mapped[AccountType] = mapped_column(_enum(AccountType, "account_type"))
    currency: Mapped[str] = mapped_column(String(3))
    masked_identifier: Mapped[str | None] = mapped_column(String(34))
    identifier_sealed: Mapped[bytes | None] = sealed_column()
    identifier_digest: Mapped[bytes | None] = digest_column(index=True)
    holder_name_sealed: Mapped[bytes | None] = sealed_column()
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()

    connection: Mapped[Connection] = relationship(lazy="raise")
    user: Mapped[User] = relationship(lazy="raise")


class Balance(Base):
    """An account's latest balance; one row per account, replaced on each sync."""

    __tablename__ = "balances"
    __table_args__ = (_currency("currency"),)

    account_id: Mapped[AccountId] = ref_column("accounts.id", primary_key=True, index=False)
    user_id: Mapped[UserId] = ref_column("users.id")
    current: Mapped[Decimal] = mapped_column(Money)
    available: Mapped[Decimal | None] = mapped_column(Money)
    credit_limit: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)

    account: Mapped[Account] = relationship(lazy="raise")
    user: Mapped[User] = relationship(lazy="raise")


class Transaction(Base):
    """One statement entry, kept as a tombstone (``removed_at``) once the bank drops it.

    Sync (:mod:`aggregator.store.changes`): ``created_seq`` and ``change_seq`` are
    positions in the connection's change sequence. Since a cursor at position *c*, a row
    with ``change_seq > c`` was added (``created_seq > c``), modified, or removed
    (``removed_at`` set). Tombstones are what let "removed" be reported at all.
    """

    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("account_id", "bank_transaction_id"),
        Index(None, "connection_id", "change_seq"),
        # The order of GET /v1/accounts/{id}/transactions among live rows (migration
        # s3_transaction_page_index): a page is an index range scan at any depth.
        Index("ix_transactions_account_page", "account_id", text(PAGE_ORDER), "id",
              postgresql_where=text("removed_at IS NULL"),
              sqlite_where=text("removed_at IS NULL")),
        _currency("currency"),
    )

    id: Mapped[TransactionId] = id_column(primary_key=True)
    account_id: Mapped[AccountId] = ref_column("accounts.id", index=False)
    connection_id: Mapped[ConnectionId] = ref_column("connections.id", index=False)
    user_id: Mapped[UserId] = ref_column("users.id")
    bank_transaction_id: Mapped[str] = mapped_column(String(255))
    pending_bank_transaction_id: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    booked_on: Mapped[date | None] = mapped_column(Date)
    value_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[TransactionStatus] = mapped_column(
        _enum(TransactionStatus, "transaction_status")
    )
    description_sealed: Mapped[bytes] = sealed_column(nullable=False)
    counterparty_sealed: Mapped[bytes | None] = sealed_column()
    merchant_category: Mapped[str | None] = mapped_column(String(64))
    created_seq: Mapped[int] = mapped_column(BigInteger)
    change_seq: Mapped[int] = mapped_column(BigInteger)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()

    account: Mapped[Account] = relationship(lazy="raise")
    connection: Mapped[Connection] = relationship(lazy="raise")
    user: Mapped[User] = relationship(lazy="raise")


class SyncState(Base):
    """Where the upstream sync of a connection stands (not the app's cursor).

    ``upstream_cursor`` is the bank side's position (Plaid's ``/transactions/sync``
    cursor); ``synced_through`` the last day fetched from an open-banking API.
    """

    __tablename__ = "sync_states"

    connection_id: Mapped[ConnectionId] = ref_column(
        "connections.id", primary_key=True, index=False
    )
    user_id: Mapped[UserId] = ref_column("users.id")
    upstream_cursor: Mapped[str | None] = mapped_column(Text)
    synced_through: Mapped[date | None] = mapped_column(Date)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(64))
    #: ``complete``, ``partial`` or ``failed`` (:class:`aggregator.models.syncs.SyncOutcome`).
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    #: When the worker retries a scheduled sync that failed transiently (5xx, 429, a
    #: timeout), and how many retries ran since the last success (worker/sync_schedule.py).
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retry_attempts: Mapped[int] = mapped_column(
        Integer, default=0, server_default=text("0"))

    connection: Mapped[Connection] = relationship(lazy="raise")
    user: Mapped[User] = relationship(lazy="raise")
