"""Sync rate budgets: spend a connection's unattended bank calls, never more than allowed.

A bank profile's :class:`~connectors.SyncPolicy` sets ``daily_budget`` calls in any
rolling 24 hours (:mod:`aggregator.models.budgets` says why rolling) for each *ledger*:
one per connection, account and data type, as banks and aggregators count them (PSD2
RTS Art. 36(5)(b); GoCardless: "per day, account and data type"). A full sync, what
:class:`~aggregator.sync.Syncer` does, makes these calls and spends one unit of each:

- the account list, about the connection (account ``''``, data type ``accounts``);
- for every account: its balances (``accounts``) and its transactions (``transactions``).

Spends are all or nothing: a sync whose calls do not all fit waits, whole.

Spending where it matters: ``reserve`` units per window are kept back from *scheduled*
syncs (reason :data:`SCHEDULED`). The worker's syncs stop at ``daily_budget - reserve``;
on-demand and webhook-triggered syncs may spend the last units, so the sync that follows
a bank's "new data" notice is served after a day of scheduled syncs.

Race safety: :func:`spend` runs in a write transaction that first locks the connection
row (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite write transactions begin
``IMMEDIATE``, so writers already take turns), then counts and inserts. Two workers or
requests therefore never both spend the last unit; the ledger's primary key
(``connection_id, account_id, data_type, n``) would refuse a second ``n`` even if they
did.

A unit is spent *before* the bank is called. Afterwards, :func:`refund` gives back only
what provably was not spent, per ledger, by this rule:

====================================================  ===========  =========
what happened to the ledger's call                     bank counted  refunded
====================================================  ===========  =========
never made (the sync stopped before it, the token      no           yes
refresh failed, the profile does not offer it)
refused while connecting (connect error or connect     no           yes
timeout, the egress policy refused it): never sent
answered, whatever the status (200, 403, 404, 429,     yes          no
5xx)
sent, no answer (read timeout, connection dropped)     maybe        no
====================================================  ===========  =========

So a bank is never asked more often than its limit, even if it counts failed calls, and
a sync that never reached the bank costs nothing. One call cannot be spent before it is
made: the first read of an account the bank lists for the first time.
:func:`record_first_reads` books it, in the sync's own write transaction; the account's
ledger was empty, so it stays within budget.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.errors import GatewayError
from aggregator.ids import ConnectionId
from aggregator.models import Account, Connection, ConnectionStatus, DataType, SyncSpend
from aggregator.models.base import utcnow
from aggregator.models.budgets import CONNECTION_LEVEL
from aggregator.store import RegionRouter
from aggregator.sync.tokens import ConnectionNotActive
from connectors import SyncPolicy

#: The window a budget applies to (PSD2 RTS Art. 36(5)(b): "in a 24-hour period").
WINDOW: Final = timedelta(hours=24)
#: What one sync reads, in the order its units are spent.
SYNC_TYPES: Final = (DataType.ACCOUNTS, DataType.TRANSACTIONS)
#: The spend reason of the worker's syncs, the only ones the reserve is kept from.
SCHEDULED: Final = "scheduled"
#: The reason booked for an account's first read (:func:`record_first_reads`).
FIRST_READ: Final = "first_read"

#: One ledger: (account id or ``''``, data type).
Ledger = tuple[str, DataType]


class BudgetExhausted(GatewayError):
    """Raised when a connection has no budget left; ``next_allowed_at`` says until when."""

    code = "sync_budget_exhausted"

    def __init__(self, connection_id: str, next_allowed_at: datetime, now: datetime) -> None:
        super().__init__(
            f"connection {connection_id} has spent its sync budget; the next sync is "
            f"allowed at {next_allowed_at.isoformat()}"
        )
        self.next_allowed_at = next_allowed_at
        #: Whole seconds to wait (RFC 9110 §10.2.3), at least 1.
        self.retry_after = max(1, math.ceil((next_allowed_at - now).total_seconds()))


class BudgetMetrics:
    """``aggregator_sync_budget_exhausted_total``: spends refused (or deferred), by bank.

    ``reason`` is the refused spend's reason (``scheduled``: a deferred worker sync;
    ``on_demand``: a 429; ``webhook``), a closed set of codes; banks come from profiles.
    """

    _by_registry: ClassVar[WeakKeyDictionary[CollectorRegistry, BudgetMetrics]] = (
        WeakKeyDictionary()
    )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> BudgetMetrics:
        """The one instance of ``registry`` (a second would be a duplicate time series):
        the worker's scheduled and webhook-triggered syncs share it."""
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self.exhausted = Counter(
            "aggregator_sync_budget_exhausted",
            "Sync budget spends refused because a ledger was full", ["bank", "reason"],
            registry=registry,
        )

    def refused(self, bank: str, reason: str) -> None:
        self.exhausted.labels(bank, reason[:32]).inc()


def limit_for(policy: SyncPolicy, reason: str | None) -> int:
    """Units a spend of ``reason`` may bring a ledger to: the reserve binds scheduled ones.

    The reserve is capped at ``daily_budget - 1`` (profiles are validated so; a policy
    built in code may not be), so scheduled syncs always keep at least one unit.
    """
    if reason != SCHEDULED:
        return policy.daily_budget
    return policy.daily_budget - min(max(policy.reserve, 0), policy.daily_budget - 1)


async def ledgers(
    session: AsyncSession, connection_id: str, types: Sequence[DataType] = SYNC_TYPES,
    accounts: Collection[str] | None = None,
) -> list[Ledger]:
    """The ledgers a sync of ``types`` spends from.

    ``accounts=None``: a full sync — the account list (if ``accounts`` is among
    ``types``) and every account the connection has. ``accounts=()``: calls about the
    connection as a whole, one per type (an item-level API such as Plaid's
    ``/transactions/sync``). Otherwise: exactly those accounts' ledgers.
    """
    if accounts is not None and not accounts:
        return [(CONNECTION_LEVEL, t) for t in types]
    found: list[Ledger] = []
    if accounts is None:
        if DataType.ACCOUNTS in types:
            found.append((CONNECTION_LEVEL, DataType.ACCOUNTS))
        accounts = (await session.execute(
            select(Account.id).where(Account.connection_id == connection_id)
            .order_by(Account.id)
        )).scalars().all()
    found.extend((account, t) for account in accounts for t in types)
    return found


async def next_allowed_at(
    session: AsyncSession, connection_id: str, policy: SyncPolicy, now: datetime,
    types: Sequence[DataType] = SYNC_TYPES, *, accounts: Collection[str] | None = None,
    reason: str | None = None,
) -> datetime:
    """When a sync of ``types`` (see :func:`ledgers`) is next within budget; ``now`` if now.

    ``reason`` is the would-be spender's (:data:`SCHEDULED` leaves the reserve alone);
    the default answers for an on-demand sync, which is what the API reports.
    """
    keys = await ledgers(session, connection_id, types, accounts)
    return await _allowed_at(session, connection_id, keys, limit_for(policy, reason), now)


async def account_allowed_at(
    session: AsyncSession, connection_id: str, policy: SyncPolicy, now: datetime,
    accounts: Sequence[str] | None = None,
) -> dict[str, datetime]:
    """Per account of the connection, when its ledgers next allow an on-demand read.

    ``accounts``: the connection's account ids when the caller has them already (one
    query fewer on ``GET …/accounts``).
    """
    spent = await _spent_in_window(session, connection_id, now)
    if accounts is None:
        accounts = list((await session.execute(
            select(Account.id).where(Account.connection_id == connection_id)
        )).scalars())
    return allowed_per_account(spent, policy, now, accounts)


async def spend(
    session: AsyncSession, connection: Connection, policy: SyncPolicy, *, now: datetime,
    reason: str, types: Sequence[DataType] = SYNC_TYPES,
    accounts: Collection[str] | None = None, metrics: BudgetMetrics | None = None,
) -> None:
    """Spend one unit of each ledger of the sync, or raise :class:`BudgetExhausted` and
    spend none (counted in ``metrics``).

    Contract: ``session`` is in a write transaction that has locked ``connection``'s row
    (:func:`lock_connection`); the caller commits. ``accounts`` as in :func:`ledgers`:
    the default is a full sync, which is what :class:`~aggregator.sync.Syncer` runs.
    """
    keys = await ledgers(session, connection.id, types, accounts)
    allowed = await _allowed_at(session, connection.id, keys, limit_for(policy, reason), now)
    if allowed > now:
        if metrics is not None:
            metrics.refused(connection.bank_id, reason)
        raise BudgetExhausted(connection.id, allowed, now)
    await _book(session, connection, keys, now=now, reason=reason)


async def record_first_reads(
    session: AsyncSession, connection: Connection, known: Collection[str], *, now: datetime,
) -> int:
    """Book the reads of the connection's accounts not in ``known`` (new this sync).

    Contract: called in the budgeted sync's write transaction, which holds the
    connection's row lock, after the new accounts were added. Returns how many accounts.
    """
    new = [a for a in (await session.execute(
        select(Account.id).where(Account.connection_id == connection.id).order_by(Account.id)
    )).scalars() if a not in known]
    if new:
        await _book(session, connection, [(a, t) for a in new for t in SYNC_TYPES],
                    now=now, reason=FIRST_READ)
    return len(new)


async def lock_connection(
    session: AsyncSession, connection_id: str, *, skip_locked: bool = False
) -> Connection | None:
    """The connection's row, locked until the transaction ends (None if it is gone).

    With ``skip_locked`` a row another transaction holds is None too (PostgreSQL's
    ``SKIP LOCKED``; SQLite's writers take turns anyway).
    """
    return (await session.execute(
        select(Connection).where(Connection.id == connection_id)
        .with_for_update(skip_locked=skip_locked)
    )).scalar_one_or_none()


async def spend_for_sync(
    router: RegionRouter, connection_id: ConnectionId, policy: SyncPolicy, *, reason: str,
    now: datetime | None = None, accounts: Collection[str] | None = None,
    metrics: BudgetMetrics | None = None,
) -> datetime:
    """Spend one sync's units in a transaction of its own (the on-demand and webhook path).

    Returns the time they were booked at: the sync's ``spent_at``, by which :func:`refund`
    finds them again when calls never reached the bank.
    """
    region = router.region_of(connection_id)
    async with router.session(region) as session, session.begin():
        connection = await lock_connection(session, connection_id)
        if connection is None or connection.status is not ConnectionStatus.ACTIVE:
            raise ConnectionNotActive(f"connection {connection_id} is not active")
        # The clock is read under the lock: read before it, a caller that queued behind
        # another spend would record an older spent_at than the spend ahead of it.
        spent_at = now or utcnow()
        await spend(session, connection, policy, now=spent_at, reason=reason,
                    accounts=accounts, metrics=metrics)
    return spent_at


async def _allowed_at(session: AsyncSession, connection_id: str, keys: Sequence[Ledger],
                      limit: int, now: datetime) -> datetime:
    return _earliest(await _spent_in_window(session, connection_id, now), keys, limit, now)


def _earliest(spent: dict[Ledger, list[datetime]], keys: Sequence[Ledger], limit: int,
              now: datetime) -> datetime:
    """The first instant every ledger in ``keys`` holds fewer than ``limit`` spends.

    With ``k >= limit`` spends in a ledger's window, sorted oldest first, it holds
    ``limit - 1`` once spend ``k - limit + 1`` (1-based) has aged out, 24 hours after it
    was made.
    """
    allowed = now
    for key in keys:
        times = spent.get(key, [])
        if len(times) >= limit:
            allowed = max(allowed, times[len(times) - limit] + WINDOW)
    return allowed


#: The spends still inside the window: run by a session or by a quick reader.
SPENT_IN_WINDOW = (
    select(SyncSpend.account_id, SyncSpend.data_type, SyncSpend.spent_at)
    .where(SyncSpend.connection_id == bindparam("connection_id"),
           SyncSpend.spent_at > bindparam("since"))
    .order_by(SyncSpend.spent_at)
)


def spent_by_ledger(rows: Iterable[Sequence[Any]]) -> dict[Ledger, list[datetime]]:
    """:data:`SPENT_IN_WINDOW`'s rows per ledger, oldest first (the type of either driver)."""
    spent: dict[Ledger, list[datetime]] = defaultdict(list)
    for account, data_type, at in rows:
        spent[(account, DataType(data_type))].append(at)
    return spent


def allowed_per_account(spent: dict[Ledger, list[datetime]], policy: SyncPolicy,
                        now: datetime, accounts: Sequence[str], *, item_level: bool = False
                        ) -> dict[str, datetime]:
    """Per account, when an on-demand read of it is next within budget.

    ``item_level``: the bank's calls are about the connection as a whole (Plaid), so
    every account shares the connection's ledgers.
    """
    if item_level:
        at = _earliest(spent, [(CONNECTION_LEVEL, t) for t in SYNC_TYPES],
                       policy.daily_budget, now)
        return dict.fromkeys(accounts, at)
    return {account: _earliest(spent, [(account, t) for t in SYNC_TYPES],
                               policy.daily_budget, now) for account in accounts}


async def _spent_in_window(session: AsyncSession, connection_id: str, now: datetime
                           ) -> dict[Ledger, list[datetime]]:
    return spent_by_ledger(await session.execute(
        SPENT_IN_WINDOW, {"connection_id": connection_id, "since": now - WINDOW}))


async def _book(session: AsyncSession, connection: Connection, keys: Sequence[Ledger], *,
                now: datetime, reason: str) -> None:
    s = SyncSpend
    await session.execute(delete(s).where(
        s.connection_id == connection.id, s.spent_at <= now - WINDOW
    ))
    last = {
        (account, data_type): n for account, data_type, n in await session.execute(
            select(s.account_id, s.data_type, func.max(s.n))
            .where(s.connection_id == connection.id).group_by(s.account_id, s.data_type)
        )
    }
    for account, data_type in keys:
        session.add(SyncSpend(
            connection_id=connection.id, account_id=account, data_type=data_type,
            n=(last.get((account, data_type)) or 0) + 1, user_id=connection.user_id,
            spent_at=now, reason=reason[:16],
        ))
    await session.flush()


async def refund(
    session: AsyncSession, connection_id: str, spent_at: datetime, sent: Collection[Ledger],
) -> int:
    """Give back the units spent at ``spent_at`` whose ledger's call did not reach the bank.

    ``sent``: the ledgers whose call the bank may have counted (the table in this
    module's docstring). Contract: the caller's write transaction; a first read
    (:data:`FIRST_READ`) is never refunded. Returns how many units came back.
    """
    s = SyncSpend
    rows = (await session.execute(
        select(s.account_id, s.data_type, s.n).where(
            s.connection_id == connection_id, s.spent_at == spent_at, s.reason != FIRST_READ)
    )).all()
    back = [(a, t, n) for a, t, n in rows if (a, t) not in set(sent)]
    for account, data_type, n in back:
        await session.execute(delete(s).where(
            s.connection_id == connection_id, s.account_id == account,
            s.data_type == data_type, s.n == n))
    return len(back)
