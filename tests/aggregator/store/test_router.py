"""The router: sessions by region or by id, typed errors, SQLite tuned at connect."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from aggregator.errors import MalformedId, UnknownRegion
from aggregator.ids import new_id
from aggregator.store import RegionRouter
from aggregator.store.engines import create_region_engine
from aggregator.store.residency import REGION_KEY


async def test_sessions_are_routed_by_the_ids_region(region_router: RegionRouter) -> None:
    assert region_router.regions == ("eu", "us")
    for region in region_router.regions:
        async with region_router.for_id(new_id("acc", region)) as session:
            assert session.info[REGION_KEY] == region
            assert session.bind is not None
        assert region_router.region_of(new_id("usr", region)) == region


async def test_ids_that_cannot_be_routed_raise_typed_errors(region_router: RegionRouter) -> None:
    with pytest.raises(UnknownRegion):
        region_router.for_id(new_id("usr", "ap"))
    with pytest.raises(UnknownRegion):
        region_router.session("ap")
    with pytest.raises(MalformedId):
        region_router.for_id("usr_eu_nope")
    with pytest.raises(MalformedId, match="global"):
        region_router.for_id(new_id("app"))


async def test_sqlite_runs_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_region_engine("eu", f"sqlite+aiosqlite:///{tmp_path / 'new' / 'eu.db'}")
    try:
        async with engine.connect() as conn:
            pragmas = [
                (await conn.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            ]
    finally:
        await engine.dispose()
    assert pragmas == ["wal", 1, 10_000]


async def test_statement_parameters_never_reach_an_error_message(
    region_router: RegionRouter,
) -> None:
    secret = "idem-key-4f1c9e"  # a value a client chose: could be anything
    async with region_router.session("eu") as session:
        with pytest.raises(DBAPIError) as raised:
            await session.execute(text("SELECT no_such_column FROM users WHERE id = :v"),
                                  {"v": secret})
    assert secret not in str(raised.value)
    assert "parameters hidden" in str(raised.value)


async def test_a_quick_read_of_a_region_whose_database_is_down_fails_within_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    import psycopg
    from sqlalchemy import select

    from aggregator.models import Connection
    from aggregator.store import quick as quick_module

    monkeypatch.setattr(quick_module, "CONNECT_TIMEOUT_SECONDS", 1.0)
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reader = quick_module.QuickReader(
        "eu", f"postgresql+psycopg://postgres@127.0.0.1:{port}/gone?connect_timeout=1", None)
    for _ in range(2):  # the failed pool is closed; the next read tries again
        with pytest.raises(psycopg.OperationalError):
            await reader.rows(select(Connection.id))
        assert reader._pool is None
    await reader.close()
