"""The sync budget ledger: one row per unattended call spent at a bank, per data type.

Banks limit account-information calls made without the user present (PSD2 RTS Art.
36(5)(b): four in 24 hours; aggregators such as GoCardless: four per day, account and
data type). The ledger counts them in a *rolling* 24 hours, not per calendar day: a
per-day counter would allow eight calls around midnight, which the regulation does not.
:mod:`aggregator.sync.budget` spends and reads it; rows older than the window are pruned
when the next call is spent.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.ids import ConnectionId, UserId
from aggregator.models.base import Base, ref_column
from aggregator.models.linking import _enum
from aggregator.models.types import UTCDateTime


class DataType(enum.Enum):
    """What a budgeted bank call reads; each has its own budget."""

    ACCOUNTS = "accounts"  # the account list (connection level) and an account's balances
    TRANSACTIONS = "transactions"  # an account's transaction history


#: ``sync_spends.account_id`` of a call about the connection, not one account (the list).
CONNECTION_LEVEL = ""


class SyncSpend(Base):
    """One unit of a budget for one data type and account, spent at ``spent_at``.

    A ledger is one ``(connection_id, account_id, data_type)``: ``account_id`` is the
    account the call was about, or :data:`CONNECTION_LEVEL` (``''``) for the account
    list. ``n`` counts that ledger's spends (the next is ``max(n) + 1``, taken under the
    connection's row lock): a spend that slipped past the lock would collide on the
    primary key instead of overspending.
    """

    __tablename__ = "sync_spends"
    __table_args__ = (Index(None, "connection_id", "account_id", "data_type", "spent_at"),)

    connection_id: Mapped[ConnectionId] = ref_column(
        "connections.id", primary_key=True, index=False
    )
    #: Our account id (``acc_…``), or ``''``; not a foreign key, so ``''`` can be stored
    #: (an erased or deleted connection takes its ledger with it through connection_id).
    account_id: Mapped[str] = mapped_column(
        String(40), primary_key=True, default=CONNECTION_LEVEL, server_default=""
    )
    data_type: Mapped[DataType] = mapped_column(
        _enum(DataType, "sync_data_type"), primary_key=True
    )
    n: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    user_id: Mapped[UserId] = ref_column("users.id")
    spent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Who spent it: ``scheduled`` (the worker), ``on_demand`` (the API), ``webhook``,
    #: ``first_read`` (an account a budgeted sync saw for the first time).
    reason: Mapped[str] = mapped_column(String(16))
