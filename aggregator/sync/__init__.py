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
    SYNC_TYPES,
    WINDOW,
    BudgetExhausted,
    lock_connection,
    next_allowed_at,
    spend,
    spend_for_sync,
)
from aggregator.sync.job import Syncer, SyncResult
from aggregator.sync.tokens import (
    ConnectionNotActive,
    CredentialBusy,
    fresh_grant,
    refresh_due_at,
)
from aggregator.sync.upsert import SyncCounts

__all__ = [
    "SYNC_TYPES",
    "WINDOW",
    "BankDirectory",
    "BudgetExhausted",
    "ConnectionNotActive",
    "CredentialBusy",
    "SyncCounts",
    "SyncResult",
    "Syncer",
    "UnknownBank",
    "fresh_grant",
    "lock_connection",
    "next_allowed_at",
    "refresh_due_at",
    "spend",
    "spend_for_sync",
]
