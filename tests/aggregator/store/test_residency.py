"""Residency: a region's session never writes another region's entity, by any path."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.errors import ResidencyViolation
from aggregator.ids import REGIONAL_ID, ApplicationId, new_id
from aggregator.models import (
    Connection,
    ConnectionStatus,
    PlaidWebhookEvent,
    User,
    metadata,
    region_columns,
)
from aggregator.models.base import table_of
from aggregator.plaid import Receipt
from aggregator.plaid.receiver import _pg_upsert, _write
from aggregator.store import RegionRouter
from connectors import PlaidWebhook
from tests.aggregator import _factories as fixtures
from tests.aggregator.conftest import Backend


async def _count(session: AsyncSession, model: type[User] | type[Connection]) -> int:
    return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_orm_write_of_a_foreign_user_is_refused_and_nothing_is_written(
    region_router: RegionRouter, app_id: ApplicationId
) -> None:
    async with region_router.session("eu") as session:
        session.add(User(
            id=new_id("usr", "us"), home_region="us", application_id=app_id,
            external_id_digest=bytes(32), external_id_sealed=b"x",
        ))
        with pytest.raises(ResidencyViolation, match=r"users\.id holds an id of region 'us'"):
            await session.commit()
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            assert await _count(session, User) == 0


async def test_a_home_region_that_disagrees_with_the_session_is_refused(
    region_router: RegionRouter, app_id: ApplicationId
) -> None:
    async with region_router.session("eu") as session:
        session.add(User(
            id=new_id("usr", "eu"), home_region="us", application_id=app_id,
            external_id_digest=bytes(32), external_id_sealed=b"x",
        ))
        with pytest.raises(ResidencyViolation, match="home_region names region 'us'"):
            await session.flush()


async def test_pointing_a_local_row_at_a_foreign_user_is_refused(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory
) -> None:
    linked = await make_linked("eu")
    async with region_router.session("eu") as session:
        connection = await session.get(Connection, linked.connection.id)
        assert connection is not None
        connection.user_id = new_id("usr", "us")
        with pytest.raises(ResidencyViolation):
            await session.commit()
    async with region_router.reader("eu") as session:
        stored = await session.get(Connection, linked.connection.id)
        assert stored is not None
        assert stored.user_id == linked.user.id


async def test_bulk_and_core_writes_of_foreign_rows_are_refused(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory, app_id: ApplicationId
) -> None:
    linked = await make_linked("eu")
    rows = [
        {"id": new_id("con", "eu"), "user_id": linked.user.id, "application_id": app_id,
         "bank_id": "b", "status": ConnectionStatus.ACTIVE},
        {"id": new_id("con", "us"), "user_id": linked.user.id, "application_id": app_id,
         "bank_id": "b", "status": ConnectionStatus.ACTIVE},
    ]
    async with region_router.session("eu") as session:
        with pytest.raises(ResidencyViolation):
            await session.execute(insert(table_of(Connection)), rows)
        await session.rollback()
        with pytest.raises(ResidencyViolation):  # ORM bulk INSERT
            await session.execute(insert(Connection), rows)
        await session.rollback()
        with pytest.raises(ResidencyViolation):  # ORM-enabled UPDATE
            await session.execute(
                update(Connection).where(Connection.id == linked.connection.id)
                .values(user_id=new_id("usr", "us"))
            )
        await session.rollback()
    connections = table_of(Connection)
    async with region_router.engine("eu").begin() as conn:
        with pytest.raises(ResidencyViolation):
            await conn.execute(insert(connections).values(rows[1]))
        with pytest.raises(ResidencyViolation):
            await conn.execute(
                update(connections).where(connections.c.id == linked.connection.id)
                .values(user_id=new_id("usr", "us"))
            )
    async with region_router.reader("eu") as session:
        assert await _count(session, Connection) == 1


async def test_mixed_workload_leaves_every_table_with_its_own_region_only(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory,
    add_transaction: fixtures.TransactionFactory,
    app_id: ApplicationId,
) -> None:
    for i in range(6):
        region = ("eu", "us")[i % 2]
        linked = await make_linked(region)
        await add_transaction(linked, description=f"txn {i}")
        other = "us" if region == "eu" else "eu"
        async with region_router.session(other) as session:  # the wrong door, every time
            session.add(Connection(
                id=new_id("con", region), user_id=linked.user.id, application_id=app_id,
                bank_id="b", status=ConnectionStatus.ACTIVE,
            ))
            with pytest.raises(ResidencyViolation):
                await session.flush()

    for region in region_router.regions:
        async with region_router.reader(region) as session:
            for table in metadata.sorted_tables:  # raw rows: no type processing in the way
                flagged = {c.name: flag for c, flag in region_columns(table)}
                result = await session.execute(text(f"SELECT * FROM {table.name}"))
                for row in result.mappings():
                    for column, value in row.items():
                        if not isinstance(value, str):
                            continue
                        if flagged.get(column) == "name":
                            assert value == region, (table.name, column)
                        for match in REGIONAL_ID.finditer(value):
                            assert match.group(2) == region, (table.name, column, value)
            for name in ("users", "connections", "credentials", "accounts", "transactions"):
                count = (await session.execute(text(f"SELECT count(*) FROM {name}"))).scalar()
                assert count == 3, name


# Arrays and unnest are PostgreSQL's: this one runs there only (no SQLite variant).
@pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_a_foreign_id_inside_an_array_parameter_is_refused(
    region_router: RegionRouter, backend: Backend,
) -> None:
    """PostgreSQL stores a webhook batch as ``INSERT … SELECT FROM unnest(arrays)``: the
    guard checks every element of an array parameter, not only scalar ones."""
    assert backend.name == "postgres"
    foreign = new_id("con", "us")
    columns = {
        "body_sha256": [bytes(32), bytes([1]) * 32], "item_id": ["item-a", "item-b"],
        "connection_id": [None, foreign], "webhook_type": ["ITEM"] * 2,
        "webhook_code": ["ERROR"] * 2, "body": ["{}"] * 2,
        "signed_at": [datetime.now(UTC)] * 2, "status": ["pending"] * 2,
    }
    async with region_router.session("eu") as session:
        with pytest.raises(ResidencyViolation, match="connection_id holds an id of region 'us'"):
            await session.execute(_pg_upsert(), columns | {"region": "eu",
                                                           "now": datetime.now(UTC)})
        await session.rollback()
    async with region_router.reader("eu") as session:
        assert await _count_events(session) == 0


async def test_the_blocking_sqlite_writer_keeps_the_residency_guard(
    region_router: RegionRouter, backend: Backend,
) -> None:
    """The webhook receiver's synchronous SQLite engine is a second path to the same file:
    it refuses another region's rows like the async engine does."""
    writer = region_router.blocking_writer("eu")
    if backend.name == "postgres":
        assert writer is None  # PostgreSQL batches stay on the async session
        return
    assert writer is not None
    body = b'{"webhook_type":"ITEM","webhook_code":"ERROR"}'
    hook = PlaidWebhook(body, hashlib.sha256(body).digest(), "kid", datetime.now(UTC),
                        "ITEM", "ERROR", None, {})
    with pytest.raises(ResidencyViolation, match="names region 'us'"):
        await asyncio.to_thread(_write, writer, "us", [hook], datetime.now(UTC))
    assert await asyncio.to_thread(_write, writer, "eu", [hook], datetime.now(UTC)) == [
        Receipt.ORPHANED]
    async with region_router.reader("eu") as session:
        assert await _count_events(session) == 1


async def _count_events(session: AsyncSession) -> int:
    return int((await session.execute(
        select(func.count()).select_from(PlaidWebhookEvent))).scalar_one())
