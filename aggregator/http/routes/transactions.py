"""Accounts and transactions of a connection: listed, paged, and synced incrementally."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import and_, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import BaseRoute

from aggregator.http.cursors import decode_cursor, encode_cursor
from aggregator.http.problems import InvalidCursor
from aggregator.http.routes.connections import sync_policy
from aggregator.http.routes.owned import owned_account, owned_connection, transaction_view
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.services import Services
from aggregator.http.views import (
    AccountList,
    AccountOut,
    BalanceOut,
    PageQuery,
    RemovedTransaction,
    SyncQuery,
    TransactionPage,
    TransactionSync,
)
from aggregator.models import Account, Balance, Connection, ConnectionStatus, Transaction
from aggregator.models.base import utcnow
from aggregator.store import changes_since
from aggregator.sync import BankDirectory, account_allowed_at, next_allowed_at

CONNECTION_ID = {"id": "A connection id (`con_<region>_…`)."}
ACCOUNT_ID = {"id": "An account id (`acc_<region>_…`)."}
#: Entries without any date (some pending ones) sort as the newest.
UNDATED = date(9999, 12, 31)


async def get_accounts(call: Call) -> AccountList:
    connection_id, region = call.path_id("id", "con")
    async with call.services.router.reader(region) as session:
        connection = await owned_connection(session, connection_id, call.caller)
        rows = (await session.execute(
            select(Account, Balance)
            .outerjoin(Balance, Balance.account_id == Account.id)
            .where(Account.connection_id == connection_id)
            .order_by(Account.created_at, Account.id)
        )).all()
        allowed = await _allowed_at(session, call.services, connection, region,
                                    [account.id for account, _ in rows])
    return AccountList([_account(account, balance, allowed.get(account.id))
                        for account, balance in rows])


async def _allowed_at(session: AsyncSession, services: Services, connection: Connection,
                      region: str, accounts: list[str]) -> dict[str, datetime]:
    """Per account, when its ledgers next allow an on-demand read (none if not active)."""
    if connection.status is not ConnectionStatus.ACTIVE:
        return {}
    policy = sync_policy(services, connection.bank_id, region)
    now = utcnow()
    if isinstance(services.banks, BankDirectory) and services.banks.is_plaid(connection.bank_id):
        # Plaid's calls are item-level: the accounts share the connection's ledgers.
        at = await next_allowed_at(session, connection.id, policy, now, accounts=())
        return dict.fromkeys(accounts, at)
    return await account_allowed_at(session, connection.id, policy, now)


def _account(account: Account, balance: Balance | None, allowed: datetime | None
             ) -> AccountOut:
    return AccountOut(
        id=account.id, connection_id=account.connection_id, name=account.name,
        type=account.type, currency=account.currency, mask=account.masked_identifier,
        balance=None if balance is None else BalanceOut(
            current=balance.current, available=balance.available,
            credit_limit=balance.credit_limit, currency=balance.currency, as_of=balance.as_of,
        ),
        next_sync_allowed_at=allowed,
    )


async def get_transactions(call: Call) -> TransactionPage:
    """Keyset pagination, newest first: the cursor holds the last (date, id) seen, so
    pages stay stable while new transactions arrive."""
    account_id, region = call.path_id("id", "acc")
    query = call.query_as(PageQuery)
    custody = call.services.custody[region]
    sort = func.coalesce(Transaction.booked_on, Transaction.value_on, literal(UNDATED))
    stmt = select(Transaction).where(
        Transaction.account_id == account_id, Transaction.removed_at.is_(None)
    )
    if query.cursor:
        day_text, last_id = decode_cursor(query.cursor, account_id, 2)
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            raise InvalidCursor("the cursor does not decode") from None
        stmt = stmt.where(or_(sort < day, and_(sort == day, Transaction.id < last_id)))
    stmt = stmt.order_by(sort.desc(), Transaction.id.desc()).limit(query.limit + 1)
    async with call.services.router.reader(region) as session:
        account = await owned_account(session, account_id, call.caller)
        rows = list((await session.execute(stmt)).scalars())
        page = rows[:query.limit]
        key = await custody.data_keys.load(session, account.user_id) if page else None
    data = [await transaction_view(custody, key, t) for t in page] if key else []
    next_cursor = None
    if len(rows) > query.limit:
        last = page[-1]
        last_day = last.booked_on or last.value_on or UNDATED
        next_cursor = encode_cursor(account_id, last_day.isoformat(), last.id)
    return TransactionPage(data, next_cursor)


async def get_transactions_sync(call: Call) -> TransactionSync:
    connection_id, region = call.path_id("id", "con")
    query = call.query_as(SyncQuery)
    custody = call.services.custody[region]
    async with call.services.router.reader(region) as session:
        connection = await owned_connection(session, connection_id, call.caller)
        position = 0
        if query.cursor:
            (text,) = decode_cursor(query.cursor, connection_id, 1)
            if not text.isdigit() or int(text) > connection.change_seq:
                raise InvalidCursor("the cursor is not a position of this connection")
            position = int(text)
        changes = await changes_since(session, connection.id, position, limit=query.count)
        changed = [*changes.added, *changes.modified]
        key = await custody.data_keys.load(session, connection.user_id) if changed else None
    views = {t.id: await transaction_view(custody, key, t) for t in changed} if key else {}
    return TransactionSync(
        added=[views[t.id] for t in changes.added],
        modified=[views[t.id] for t in changes.modified],
        removed=[RemovedTransaction(t) for t in changes.removed],
        next_cursor=encode_cursor(connection_id, str(changes.cursor)),
        has_more=changes.has_more,
    )


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/v1/connections/{id}/accounts", get_accounts, "GET", Operation(
            description=(
                "The accounts read through the connection at the last sync: type, "
                "currency, the masked account number (the full number is sealed at rest), "
                "the latest balance and the account's own `next_sync_allowed_at`."
            ),
            summary="List a connection's accounts with their balances",
            response=AccountList, tags=("accounts",), path_params=CONNECTION_ID,
        )),
        ApiRoute("/v1/accounts/{id}/transactions", get_transactions, "GET", Operation(
            summary="Page through an account's transactions, newest first",
            description=get_transactions.__doc__, query=PageQuery, response=TransactionPage,
            tags=("transactions",), path_params=ACCOUNT_ID,
        )),
        ApiRoute("/v1/connections/{id}/transactions/sync", get_transactions_sync, "GET",
                 Operation(
            summary="Transactions added, modified and removed since a cursor",
            description=TransactionSync.__doc__, query=SyncQuery, response=TransactionSync,
            tags=("transactions",), path_params=CONNECTION_ID,
        )),
    ]
