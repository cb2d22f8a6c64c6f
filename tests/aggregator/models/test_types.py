"""Money stays exact and instants stay aware UTC, on SQLite as on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from aggregator.models import Balance
from aggregator.store import RegionRouter
from tests.aggregator import _factories as fixtures

AS_OF = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))


async def _balance(
    router: RegionRouter, linked: fixtures.Linked, current: object, as_of: datetime = AS_OF
) -> Balance:
    async with router.session("eu") as session, session.begin():
        session.add(Balance(
            account_id=linked.account.id, user_id=linked.user.id, current=current,
            available=None, credit_limit=Decimal("5000"), currency="EUR", as_of=as_of,
        ))
    async with router.reader("eu") as session:
        return (await session.execute(select(Balance))).scalar_one()


@pytest.mark.parametrize("amount", [
    Decimal("123456789012345.6789"), Decimal("-0.0001"), Decimal("-922337203685477.5808"),
    Decimal("0.10"), Decimal(7),
])
async def test_money_round_trips_exactly(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory, amount: Decimal
) -> None:
    stored = await _balance(region_router, await make_linked("eu"), amount)
    assert stored.current == amount
    assert isinstance(stored.current, Decimal)
    assert stored.credit_limit == Decimal("5000.0000")


@pytest.mark.parametrize(("amount", "error"), [
    (1.1, "must be a Decimal"),
    (Decimal("0.00001"), "more than 4 fractional digits"),
    (Decimal("10000000000000000"), "exceeds 16 integer digits"),
    (Decimal("NaN"), "not finite"),
])
async def test_money_refuses_floats_and_rounding(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory, amount: object, error: str
) -> None:
    linked = await make_linked("eu")
    with pytest.raises(StatementError, match=error):
        await _balance(region_router, linked, amount)


async def test_instants_come_back_aware_in_utc(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory
) -> None:
    stored = await _balance(region_router, await make_linked("eu"), Decimal(1))
    assert stored.as_of == AS_OF
    assert stored.as_of.tzinfo is UTC
    async with region_router.reader("eu") as session:
        raw = (await session.execute(text("SELECT as_of FROM balances"))).scalar_one()
    assert "10:30:15" in str(raw)  # stored as UTC, whatever zone it arrived in


async def test_naive_datetimes_are_refused(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory
) -> None:
    linked = await make_linked("eu")
    with pytest.raises(StatementError, match="timezone-aware"):
        await _balance(region_router, linked, Decimal(1), datetime(2025, 3, 1, 12))
