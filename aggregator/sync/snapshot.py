"""What one sync reads from the bank, before anything is written.

All bank calls happen here, outside any database transaction: the write that follows
locks the connection row (:func:`aggregator.store.take_change_seqs`) and must not wait
on the network while holding it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TypeVar

import httpx

from connectors import (
    ACCOUNT_RESOURCES,
    Account,
    Balance,
    BankProtocolError,
    ConnectorError,
    Dialect,
    EgressRefused,
    ResourceNotOffered,
    ResourceNotPermitted,
    Transaction,
)

T = TypeVar("T")

#: Re-read this many days before the last sync: banks back-date late bookings.
OVERLAP = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ResourceRead:
    """The outcome of reading one resource, and the bank's id for the call.

    ``resource`` is ``accounts`` (the list, ``bank_account_id`` ``None``), ``balances``
    or ``transactions``; ``outcome`` a :class:`~aggregator.models.ResourceOutcome`
    value; ``error_code`` a :attr:`~connectors.ConnectorError.code`, ``None`` when the
    read succeeded or was never attempted (the bank profile does not list the resource);
    ``request_id`` the dialect's ``last_request_id`` after the call (the contract in
    ``connectors/dialects/base.py``), ``None`` when nothing was sent.
    """

    resource: str
    bank_account_id: str | None
    outcome: str
    error_code: str | None = None
    request_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    @property
    def expected(self) -> bool:
        """Read, or skipped because the bank's profile says it does not offer it."""
        return self.ok or (self.outcome == NOT_OFFERED and self.error_code is None)


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One account as the bank reports it now, with its entries since ``since``.

    ``reads`` holds the outcome of each resource; only a resource read ``ok`` is
    written (a transaction list that was not read must not make entries look removed).
    """

    account: Account
    balance: Balance | None
    transactions: list[Transaction] = field(default_factory=list)
    reads: dict[str, ResourceRead] = field(default_factory=dict)

    def read(self, resource: str) -> bool:
        """Whether ``resource`` was read (a snapshot built without ``reads`` read all)."""
        found = self.reads.get(resource)
        return found is None or found.ok


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every account of a connection; ``since`` is the first day the entries cover."""

    since: date | None
    accounts: list[AccountSnapshot]
    listing: ResourceRead | None = None

    @property
    def complete(self) -> bool:
        return all(r.expected for a in self.accounts for r in a.reads.values())


OK, NOT_PERMITTED, NOT_OFFERED, FAILED = "ok", "not_permitted", "not_offered", "failed"


@dataclass(slots=True)
class CallLog:
    """Which bank calls of a sync may have counted against the bank's limit.

    ``sent`` holds ``(bank_account_id or None, resource)`` of every call that reached the
    bank, answered or not (a 5xx, a 429, a read timeout: the bank may have counted it).
    A call that provably never left (the connection was refused or timed out while
    connecting, the egress policy refused it) or that was never made is not in it: its
    budget unit can be refunded (:func:`aggregator.sync.budget.refund`).
    """

    sent: set[tuple[str | None, str]] = field(default_factory=set)

    def record(self, account_id: str | None, resource: str, exc: BaseException | None) -> None:
        if exc is None or reached_bank(exc):
            self.sent.add((account_id, resource))


def reached_bank(exc: BaseException) -> bool:
    """Whether a failed call may have reached the bank (and been counted by it)."""
    if isinstance(exc, EgressRefused):
        return False
    cause = exc.__cause__
    return not isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout)


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


async def read_snapshot(
    dialect: Dialect, since: date | None, resources: Collection[str] = ACCOUNT_RESOURCES,
    calls: CallLog | None = None,
) -> Snapshot:
    """The account list (required: its failure fails the sync), then per account each
    resource of ``resources`` (the bank profile's ``api.resources``).

    A resource the bank refuses (403), does not have (404, 501) or answers malformed is
    recorded and the next one read; an outage (:class:`~connectors.BankUnavailable`)
    stops the reads at once and propagates: a failing bank gets no more calls. ``calls``
    learns which calls reached the bank, for the budget's refunds.
    """
    calls = calls if calls is not None else CallLog()
    found = []
    try:
        accounts = await dialect.accounts()
    except ConnectorError as exc:
        calls.record(None, "accounts", exc)
        raise
    calls.record(None, "accounts", None)
    listing = ResourceRead("accounts", None, OK, request_id=dialect.last_request_id)
    for account in accounts:
        account_id = account.bank_account_id
        reads: dict[str, ResourceRead] = {}
        balance: Balance | None = None
        entries: list[Transaction] = []
        if "balances" in resources:
            reads["balances"], balances = await _read(
                dialect, "balances", account_id, dialect.balances(account_id), calls)
            balance = _pick(account, balances or [])
        if "transactions" in resources:
            reads["transactions"], got = await _read(
                dialect, "transactions", account_id, dialect.transactions(account_id, since),
                calls)
            entries = got or []
        for resource in ACCOUNT_RESOURCES:
            reads.setdefault(resource, ResourceRead(resource, account_id, NOT_OFFERED))
        found.append(AccountSnapshot(account, balance, entries, reads))
    return Snapshot(since, found, listing)


async def _read(
    dialect: Dialect, resource: str, account_id: str, call: Awaitable[T], calls: CallLog
) -> tuple[ResourceRead, T | None]:
    try:
        value = await call
    except ConnectorError as exc:
        calls.record(account_id, resource, exc)
        if not isinstance(exc, BankProtocolError):
            raise  # an outage or a dead grant stops the sync: no more calls
        outcome = exc.code if isinstance(exc, ResourceNotPermitted | ResourceNotOffered) else FAILED
        return ResourceRead(resource, account_id, outcome, exc.code,
                            dialect.last_request_id), None
    calls.record(account_id, resource, None)
    return ResourceRead(resource, account_id, OK, None, dialect.last_request_id), value


def _pick(account: Account, balances: list[Balance]) -> Balance | None:
    balance = next((b for b in balances if b.currency == account.currency), None)
    return balances[0] if balance is None and balances else balance
