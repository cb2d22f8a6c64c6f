"""What one sync reads from the bank, before anything is written.

All bank calls happen here, outside any database transaction: the write that follows
locks the connection row (:func:`aggregator.store.take_change_seqs`) and must not wait
on the network while holding it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from connectors import Account, Balance, Dialect, Transaction

#: Re-read this many days before the last sync: banks back-date late bookings.
OVERLAP = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One account as the bank reports it now, with its entries since ``since``."""

    account: Account
    balance: Balance | None
    transactions: list[Transaction] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every account of a connection; ``since`` is the first day the entries cover."""

    since: date | None
    accounts: list[AccountSnapshot]


def window_start(synced_through: date | None, oldest_pending: date | None,
                 has_undated_pending: bool) -> date | None:
    """The first day to fetch: ``None`` (everything) on the first sync.

    Later syncs go back :data:`OVERLAP` days, and further when a pending entry we still
    hold is older, since only a window that covers it can show it vanished.
    """
    if synced_through is None or has_undated_pending:
        return None
    start = synced_through - OVERLAP
    return min(start, oldest_pending) if oldest_pending is not None else start


async def read_snapshot(dialect: Dialect, since: date | None) -> Snapshot:
    """Accounts, balances and transactions through the connection's dialect."""
    found = []
    for account in await dialect.accounts():
        balances = await dialect.balances(account.bank_account_id)
        balance = next((b for b in balances if b.currency == account.currency), None)
        if balance is None and balances:
            balance = balances[0]
        entries = await dialect.transactions(account.bank_account_id, since)
        found.append(AccountSnapshot(account, balance, entries))
    return Snapshot(since, found)
