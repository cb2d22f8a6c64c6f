"""The read path's levers: keyset paging over the page index, the API-key cache's
revocation bound, and rate-limit leases keeping the shared budget (both databases)."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from decimal import Decimal

import httpx
from sqlalchemy import text, update

from aggregator.http import Services
from aggregator.http.auth import KEY_CACHE
from aggregator.http.keycache import KeyCache
from aggregator.http.ratelimit import DatabaseBuckets
from aggregator.http.ratelimit.leases import LeasedBuckets, lease_size
from aggregator.http.ratelimit.policy import Level
from aggregator.http.routes.transactions import FIRST_PAGE, PAGE_AFTER
from aggregator.http.views import TransactionPage
from aggregator.ids import new_id
from aggregator.models import ApiKey, Application, Transaction, TransactionStatus
from aggregator.models.base import utcnow
from aggregator.settings import RateLimit
from aggregator.store import RegionRouter, take_change_seqs
from tests.aggregator._factories import Linked, LinkFactory, TransactionFactory
from tests.aggregator.http._helpers import assert_problem, parsed

SLOW = 0.01  # tokens per second: no refill within a test


async def _add_rows(router: RegionRouter, linked: Linked, dates: list[tuple[date | None,
                                                                         date | None]]
                    ) -> list[Transaction]:
    """Transactions with the given (booked_on, value_on), sealed blobs left unopened."""
    region = linked.user.home_region
    rows = []
    async with router.session(region) as session, session.begin():
        seq = await take_change_seqs(session, linked.connection.id, len(dates))
        for n, (booked, value) in enumerate(dates):
            rows.append(Transaction(
                id=new_id("txn", region), account_id=linked.account.id,
                connection_id=linked.connection.id, user_id=linked.user.id,
                bank_transaction_id=f"b{n}", amount=Decimal("-1.0000"), currency="EUR",
                booked_on=booked, value_on=value, status=TransactionStatus.BOOKED,
                description_sealed=b"x", created_seq=seq, change_seq=seq,
            ))
        session.add_all(rows)
    return rows


async def test_keyset_pages_walk_ties_undated_and_value_dates_exactly_once(
    make_linked: LinkFactory, region_router: RegionRouter,
) -> None:
    linked = await make_linked("eu")
    day = date(2025, 3, 1)
    dated: list[tuple[date | None, date | None]] = [(day, None)] * 7
    valued: list[tuple[date | None, date | None]] = [(None, day)] * 3
    undated_rows: list[tuple[date | None, date | None]] = [(None, None)] * 2
    older: list[tuple[date | None, date | None]] = [(day - timedelta(days=1), None)] * 4
    dates = dated + valued + undated_rows + older
    rows = await _add_rows(region_router, linked, dates)
    undated = date(9999, 12, 31)
    expected = sorted(rows, key=lambda t: (t.booked_on or t.value_on or undated, t.id),
                      reverse=True)
    quick = region_router.quick("eu")  # the reader the endpoint uses, on both databases
    for limit in (1, 2, 3, 5):
        seen: list[str] = []
        after: dict[str, object] = {}
        for _ in range(len(rows) + 1):
            page = await quick.rows(PAGE_AFTER if after else FIRST_PAGE,
                                    {"account_id": linked.account.id, "limit": limit + 1,
                                     **after})
            seen += [r.id for r in page[:limit]]
            if len(page) <= limit:
                break
            last = page[limit - 1]
            after = {"day": last.booked_on or last.value_on or undated, "last_id": last.id}
        assert seen == [t.id for t in expected], limit


async def test_pages_through_the_api_across_a_day_of_ties(
    api: httpx.AsyncClient, make_linked: LinkFactory, add_transaction: TransactionFactory,
) -> None:
    add = add_transaction
    linked = await make_linked("us")
    made = [await add(linked, description=f"Shop {i}") for i in range(7)]  # one date
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = parsed(TransactionPage, await api.get(
            f"/v1/accounts/{linked.account.id}/transactions", params=params))
        seen += [t.id for t in page.data]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted((t.id for t in made), reverse=True)


async def test_the_page_query_is_an_index_range_without_a_sort(
    make_linked: LinkFactory, region_router: RegionRouter,
) -> None:
    linked = await make_linked("eu")
    await _add_rows(region_router, linked, [(date(2025, 1, 1 + n % 28), None)
                                            for n in range(50)])
    statement = PAGE_AFTER.params(account_id=linked.account.id, limit=21,
                                  day=date(2025, 1, 15), last_id="txn_eu_m")
    async with region_router.session("eu") as session, session.begin():
        compiled = statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        if session.get_bind().dialect.name == "postgresql":
            # A handful of rows would be scanned sequentially; forbid it to see the plan
            # the index offers, and that it needs no Sort step.
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(r[0] for r in await session.execute(text(f"EXPLAIN {compiled}")))
            assert "ix_transactions_account_page" in plan, plan
            assert "Sort" not in plan, plan
            # The keyset position is part of the index condition, not a filter on top.
            assert "Index Cond" in plan, plan
            assert "ROW(" in plan.upper(), plan
            # The quick reader's connections prepare the statement after its fifth use,
            # and PostgreSQL may then plan it once for any values: that plan too.
            sql = str(PAGE_AFTER.compile(dialect=session.get_bind().dialect))
            for n, name in enumerate(("account_id", "day", "last_id", "limit"), start=1):
                sql = sql.replace(f"%({name})s", f"${n}")
            await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
            await session.execute(text(f"PREPARE page_after AS {sql}"))
            assert linked.account.id.replace("_", "").isalnum()  # safe to write inline
            generic = "\n".join(r[0] for r in await session.execute(text(
                f"EXPLAIN EXECUTE page_after('{linked.account.id}', '2025-01-15', "
                "'txn_eu_m', 21)")))
            await session.execute(text("DEALLOCATE page_after"))
            assert "ix_transactions_account_page" in generic, generic
            assert "Sort" not in generic, generic
        else:
            plan = "\n".join(str(r[-1]) for r in await session.execute(
                text(f"EXPLAIN QUERY PLAN {compiled}")))
            assert "ix_transactions_account_page" in plan, plan
            assert "TEMP B-TREE" not in plan, plan


async def test_a_revoked_key_is_refused_within_the_cache_ttl(
    api: httpx.AsyncClient, services: Services, region_router: RegionRouter,
    make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    clock = [1000.0]
    cache = services.extra[KEY_CACHE] = KeyCache(ttl=5.0, clock=lambda: clock[0])
    path = f"/v1/connections/{linked.connection.id}/accounts"
    assert (await api.get(path)).status_code == 200
    for region in ("eu", "us"):
        async with region_router.session(region) as session, session.begin():
            await session.execute(update(ApiKey).values(revoked_at=utcnow()))
    clock[0] += 4.9  # within the bound the checked key is still trusted
    assert (await api.get(path)).status_code == 200
    clock[0] += 0.2  # past it, the revocation holds
    assert_problem(await api.get(path), 401, "unauthenticated")
    clock[0] += 60
    assert_problem(await api.get(path), 401, "unauthenticated")  # failures are not cached
    assert cache.ttl == 5.0


async def test_a_disabled_application_is_refused_within_the_cache_ttl(
    api: httpx.AsyncClient, services: Services, region_router: RegionRouter,
    make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    clock = [0.0]
    services.extra[KEY_CACHE] = KeyCache(ttl=5.0, clock=lambda: clock[0])
    path = f"/v1/connections/{linked.connection.id}/accounts"
    assert (await api.get(path)).status_code == 200
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Application).values(disabled_at=utcnow()))
    clock[0] += 5.01
    assert_problem(await api.get(path), 401, "unauthenticated")


async def test_leases_never_grant_more_than_the_shared_bucket(
    region_router: RegionRouter,
) -> None:
    limit = RateLimit(64, SLOW)
    assert lease_size(limit) == 4
    gateways = [LeasedBuckets(DatabaseBuckets(region_router)) for _ in range(3)]
    granted = 0
    for n in range(120):
        level = await gateways[n % 3].take("eu", "read:app_shared", limit)
        granted += level.granted
    # Never more than one bucket's worth; at most a lease per other gateway unspent.
    assert 64 - 2 * 4 <= granted <= 64
    exact = await DatabaseBuckets(region_router).take("eu", "read:app_shared", limit)
    assert not exact.granted


async def test_requests_in_flight_share_one_lease_renewal(
    region_router: RegionRouter,
) -> None:
    class Counting(DatabaseBuckets):
        costs: list[int] = []

        async def take(self, region: str, bucket: str, limit: RateLimit, *, cost: int = 1,
                       now: float | None = None) -> Level:
            Counting.costs.append(cost)
            return await super().take(region, bucket, limit, cost=cost, now=now)

    store = LeasedBuckets(Counting(region_router), hold=3600.0)
    limit = RateLimit(512, SLOW)  # leases of 32
    levels = await asyncio.gather(*(store.take("eu", "read:app_herd", limit)
                                    for _ in range(16)))
    assert all(level.granted for level in levels)
    # Sixteen concurrent requests on an empty lease: one renewal, not sixteen.
    assert Counting.costs == [32]
    exact = await DatabaseBuckets(region_router).take("eu", "read:app_herd", limit)
    assert int(exact.tokens) == 512 - 32 - 1


async def test_leases_spare_the_store_a_write_per_request(
    region_router: RegionRouter,
) -> None:
    class Counting(DatabaseBuckets):
        calls = 0

        async def take(self, region: str, bucket: str, limit: RateLimit, *, cost: int = 1,
                       now: float | None = None) -> Level:
            Counting.calls += 1
            return await super().take(region, bucket, limit, cost=cost, now=now)

    store = LeasedBuckets(Counting(region_router), hold=3600.0)
    limit = RateLimit(512, SLOW)  # leases of 32
    levels = [await store.take("us", "read:app_busy", limit) for _ in range(64)]
    assert all(level.granted for level in levels)
    assert Counting.calls == 2
    assert int(levels[0].tokens) == 511
    assert int(levels[-1].tokens) == 448
