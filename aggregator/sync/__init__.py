"""The sync job: bringing a connection's accounts and transactions up to date.

- :mod:`~aggregator.sync.banks`: :class:`BankDirectory`, profiles and OAuth clients;
- :mod:`~aggregator.sync.tokens`: a fresh access token, refreshed under a lease;
- :mod:`~aggregator.sync.snapshot`: every bank read of one sync;
- :mod:`~aggregator.sync.upsert`: writing it, with the change log behind sync cursors;
- :mod:`~aggregator.sync.job`: :class:`Syncer`, the three composed;
- :mod:`~aggregator.sync.budget`: the rate budget each unattended sync spends.
"""

from aggregator.sync.banks import BankDirectory, UnknownBank
from aggregator.sync.budget import (
    SCHEDULED,
    SYNC_TYPES,
    WINDOW,
    BudgetExhausted,
    BudgetMetrics,
    account_allowed_at,
    lock_connection,
    next_allowed_at,
    record_first_reads,
    refund,
    spend,
    spend_for_sync,
)
from aggregator.sync.job import Syncer
from aggregator.sync.runs import SyncResult
from aggregator.sync.tokens import (
    ConnectionNotActive,
    CredentialBusy,
    fresh_grant,
    refresh_due_at,
)
from aggregator.sync.upsert import SyncCounts

__all__ = [
    "SCHEDULED",
    "SYNC_TYPES",
    "WINDOW",
    "BankDirectory",
    "BudgetExhausted",
    "BudgetMetrics",
    "ConnectionNotActive",
    "CredentialBusy",
    "SyncCounts",
    "SyncResult",
    "Syncer",
    "UnknownBank",
    "account_allowed_at",
    "fresh_grant",
    "lock_connection",
    "next_allowed_at",
    "record_first_reads",
    "refresh_due_at",
    "refund",
    "spend",
    "spend_for_sync",
]
