"""Sync cursors: added, modified and removed since a position in the change sequence."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from aggregator.models import Transaction
from aggregator.store import RegionRouter, changes_since, take_change_seqs
from tests.aggregator import _factories as fixtures


async def test_changes_since_a_cursor(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory,
    add_transaction: fixtures.TransactionFactory,
) -> None:
    linked = await make_linked("eu")
    con = linked.connection.id
    a = await add_transaction(linked, description="a")
    b = await add_transaction(linked, description="b")
    async with region_router.reader("eu") as session:
        first = await changes_since(session, con, 0)
    assert [t.id for t in first.added] == [a.id, b.id]
    assert (first.modified, first.removed, first.has_more) == ([], [], False)

    c = await add_transaction(linked, description="c")
    async with region_router.session("eu") as session, session.begin():
        seq = await take_change_seqs(session, con, 2)
        changed = await session.get(Transaction, a.id)
        removed = await session.get(Transaction, b.id)
        assert changed is not None
        assert removed is not None
        changed.amount, changed.change_seq = Decimal("-4.2000"), seq
        removed.removed_at, removed.change_seq = datetime.now(UTC), seq + 1

    async with region_router.reader("eu") as session:
        later = await changes_since(session, con, first.cursor)
        again = await changes_since(session, con, later.cursor)
        paged = await changes_since(session, con, 0, limit=1)
    assert [t.id for t in later.added] == [c.id]
    assert [(t.id, t.amount) for t in later.modified] == [(a.id, Decimal("-4.2000"))]
    assert later.removed == [b.id]
    assert later.cursor == seq + 1 > first.cursor
    assert (again.added, again.modified, again.removed) == ([], [], [])
    assert again.cursor == later.cursor
    assert paged.has_more
    assert len(paged.added) == 1
