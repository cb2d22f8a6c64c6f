"""Accounts with balances, paged transactions, and Plaid-style incremental sync."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
from sqlalchemy import update

from aggregator.http.cursors import encode_cursor
from aggregator.http.views import AccountList, TransactionPage, TransactionSync
from aggregator.ids import ConnectionId
from aggregator.models import Balance, Transaction
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter, take_change_seqs
from aggregator.sync import spend_for_sync
from connectors import SyncPolicy
from tests.aggregator._factories import Linked, LinkFactory, TransactionFactory
from tests.aggregator.http._helpers import assert_problem, parsed


async def change(router: RegionRouter, linked: Linked, txn: Transaction, **values: object
                 ) -> None:
    """Record a change to ``txn`` the way the sync job will: a new change number."""
    region = linked.user.home_region
    async with router.session(region) as session, session.begin():
        seq = await take_change_seqs(session, linked.connection.id, 1)
        await session.execute(
            update(Transaction).where(Transaction.id == txn.id).values(change_seq=seq, **values)
        )


async def test_accounts_come_with_their_balance(
    api: httpx.AsyncClient, make_linked: LinkFactory, region_router: RegionRouter
) -> None:
    linked = await make_linked("eu", iban="DE89370400440532013000")
    path = f"/v1/connections/{linked.connection.id}/accounts"
    (account,) = parsed(AccountList, await api.get(path)).data
    assert (account.id, account.mask, account.balance) == (linked.account.id, "3000", None)

    async with region_router.session("eu") as session, session.begin():
        session.add(Balance(
            account_id=linked.account.id, user_id=linked.user.id, current=Decimal("1204.5000"),
            available=Decimal("1100.0000"), currency="EUR", as_of=datetime.now(UTC),
        ))
    (account,) = parsed(AccountList, await api.get(path)).data
    assert account.balance is not None
    assert account.balance.current == Decimal("1204.5")
    raw = (await api.get(path)).json()["data"][0]
    assert raw["balance"]["current"] == "1204.5000"  # money travels as an exact string
    assert "DE89" not in (await api.get(path)).text  # the full IBAN stays sealed


async def test_accounts_say_when_their_own_budget_next_allows_a_read(
    api: httpx.AsyncClient, make_linked: LinkFactory, region_router: RegionRouter,
) -> None:
    linked = await make_linked("eu")  # the sandbox profile: 4 reads a day per ledger
    path = f"/v1/connections/{linked.connection.id}/accounts"
    before = utcnow()
    (account,) = parsed(AccountList, await api.get(path)).data
    assert account.next_sync_allowed_at is not None
    assert before <= account.next_sync_allowed_at <= utcnow()  # now: within budget
    connection_id = ConnectionId(linked.connection.id)

    # Four calls about the connection as a whole spend none of the account's ledgers...
    for minutes in range(4, 0, -1):
        await spend_for_sync(region_router, connection_id, SyncPolicy(), reason="webhook",
                             accounts=(), now=before - timedelta(minutes=minutes))
    (account,) = parsed(AccountList, await api.get(path)).data
    assert account.next_sync_allowed_at is not None
    assert account.next_sync_allowed_at <= utcnow()
    connection = (await api.get(f"/v1/connections/{connection_id}")).json()
    assert datetime.fromisoformat(connection["next_sync_allowed_at"]) > utcnow()
    # ...four reads of the account do: it waits for the oldest to leave the 24 h window.
    for minutes in range(4, 0, -1):
        await spend_for_sync(region_router, connection_id, SyncPolicy(), reason="on_demand",
                             accounts=[linked.account.id],
                             now=before - timedelta(minutes=minutes))
    (account,) = parsed(AccountList, await api.get(path)).data
    assert account.next_sync_allowed_at == before - timedelta(minutes=4) + timedelta(hours=24)

    assert (await api.delete(f"/v1/connections/{connection_id}")).status_code == 200
    (account,) = parsed(AccountList, await api.get(path)).data
    assert account.next_sync_allowed_at is None  # a revoked connection does not sync


async def test_transactions_page_newest_first_with_opaque_cursors(
    api: httpx.AsyncClient, make_linked: LinkFactory, add_transaction: TransactionFactory,
    region_router: RegionRouter,
) -> None:
    linked = await make_linked("us")
    made = [await add_transaction(linked, description=f"Shop {i}", counterparty="ACME")
            for i in range(5)]
    newest = made[2]
    await change(region_router, linked, newest, booked_on=date(2025, 4, 1))
    removed = made[0]
    await change(region_router, linked, removed, removed_at=datetime.now(UTC))

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = parsed(TransactionPage, await api.get(
            f"/v1/accounts/{linked.account.id}/transactions", params=params))
        seen += page.data
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
        assert linked.account.id not in cursor  # opaque, not a readable id
    rest = sorted((t for t in made if t.id not in (newest.id, removed.id)),
                  key=lambda t: t.id, reverse=True)
    assert [t.id for t in seen] == [newest.id, *(t.id for t in rest)]
    assert pages == 2
    assert seen[0].description == "Shop 2"
    assert seen[0].counterparty == "ACME"
    assert seen[0].amount == Decimal("-3.5")


async def test_bad_paging_parameters_are_422_problems(
    api: httpx.AsyncClient, make_linked: LinkFactory, add_transaction: TransactionFactory
) -> None:
    linked = await make_linked("eu")
    other = await make_linked("eu")
    path = f"/v1/accounts/{linked.account.id}/transactions"
    foreign = encode_cursor(other.account.id, "2025-03-01", other.account.id)
    cases = {
        "limit=0": ("limit", None), "limit=501": ("limit", None), "limit=ten": ("limit", None),
        "limit=1&limit=2": ("limit", None), "curser=abc": ("curser", None),
        "cursor=%00": ("cursor", None),
    }
    for query, (parameter, _) in cases.items():
        body = assert_problem(await api.get(f"{path}?{query}"), 422, "validation_failed")
        assert [e["parameter"] for e in body["errors"]] == [parameter], query
    for cursor in ("!!!", "djF8eA", foreign, encode_cursor(linked.account.id, "soon", "x")):
        assert_problem(await api.get(path, params={"cursor": cursor}), 422, "invalid_cursor")
    assert_problem(await api.get("/v1/accounts/acc_eu_nope/transactions"), 404)


async def test_sync_reports_added_modified_and_removed_since_the_cursor(
    api: httpx.AsyncClient, make_linked: LinkFactory, add_transaction: TransactionFactory,
    region_router: RegionRouter,
) -> None:
    linked = await make_linked("eu")
    path = f"/v1/connections/{linked.connection.id}/transactions/sync"
    first = [await add_transaction(linked, description=f"T{i}") for i in range(3)]

    start = parsed(TransactionSync, await api.get(path, params={"cursor": ""}))
    assert [t.id for t in start.added] == [t.id for t in first]
    assert (start.modified, start.removed, start.has_more) == ([], [], False)
    assert parsed(TransactionSync, await api.get(path)).added == start.added

    await change(region_router, linked, first[0], amount=Decimal("-4.2500"))
    await change(region_router, linked, first[1], removed_at=datetime.now(UTC))
    fresh = await add_transaction(linked, description="T3")

    added, modified, removed, cursor = [], [], [], start.next_cursor
    while True:
        page = parsed(TransactionSync, await api.get(path, params={"cursor": cursor,
                                                                   "count": "1"}))
        added += page.added
        modified += page.modified
        removed += page.removed
        cursor = page.next_cursor
        if not page.has_more:
            break
    assert [t.id for t in added] == [fresh.id]
    assert [(t.id, t.amount) for t in modified] == [(first[0].id, Decimal("-4.25"))]
    assert [r.transaction_id for r in removed] == [first[1].id]
    done = parsed(TransactionSync, await api.get(path, params={"cursor": cursor}))
    assert (done.added, done.modified, done.removed, done.next_cursor) == ([], [], [], cursor)


async def test_sync_cursors_belong_to_one_connection(
    api: httpx.AsyncClient, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    other = await make_linked("eu")
    path = f"/v1/connections/{linked.connection.id}/transactions/sync"
    for cursor in (encode_cursor(other.connection.id, "0"),
                   encode_cursor(linked.connection.id, "99"),
                   encode_cursor(linked.connection.id, "-1"), "%%%"):
        assert_problem(await api.get(path, params={"cursor": cursor}), 422, "invalid_cursor")
