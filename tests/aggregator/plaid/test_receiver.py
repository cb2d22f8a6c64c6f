"""Storing a batch of verified webhooks: two statements, receipts in order, on both stores."""

from __future__ import annotations

from sqlalchemy import select

from aggregator.models import Connection, PlaidWebhookEvent, WebhookStatus
from aggregator.plaid import Receipt
from aggregator.plaid.receiver import store_webhooks
from aggregator.store import RegionRouter
from tests.aggregator.plaid.conftest import ITEM
from tests.aggregator.plaid.test_apply import webhook


async def test_a_batch_stores_each_body_once_with_its_connection(
    region_router: RegionRouter, connection: Connection,
) -> None:
    known = webhook("ITEM", "LOGIN_REPAIRED")
    stranger = webhook("ITEM", "LOGIN_REPAIRED", item_id="item-of-nobody")
    async with region_router.session("eu") as session, session.begin():
        receipts = await store_webhooks(session, "eu", [known, stranger, known])
    assert receipts == [Receipt.STORED, Receipt.ORPHANED, Receipt.DUPLICATE]
    async with region_router.session("eu") as session, session.begin():
        # pending: coalesced; orphaned: a new notification, its item looked up again
        assert await store_webhooks(session, "eu", [known, stranger]) == [
            Receipt.DUPLICATE, Receipt.ORPHANED]
    async with region_router.reader("eu") as session:
        rows = {e.item_id: e for e in (await session.execute(
            select(PlaidWebhookEvent))).scalars()}
    assert set(rows) == {ITEM, "item-of-nobody"}
    assert (rows[ITEM].status, rows[ITEM].connection_id) == (WebhookStatus.PENDING,
                                                             connection.id)
    assert rows["item-of-nobody"].status is WebhookStatus.ORPHANED
