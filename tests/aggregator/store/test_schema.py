"""Migrations: one history applies on SQLite and PostgreSQL and matches the models."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SAWarning

from aggregator.errors import SchemaOutOfDate
from aggregator.models import metadata
from aggregator.store import RegionRouter, current_revision, head_revision, require_head
from aggregator.store.engines import create_region_engine
from aggregator.store.schema import script_location


async def test_every_region_is_at_the_head_revision(region_router: RegionRouter) -> None:
    for region in region_router.regions:
        assert await current_revision(region_router.engine(region)) == head_revision()
        await require_head(region_router.engine(region), region)


async def test_models_and_migrations_do_not_differ(region_router: RegionRouter) -> None:
    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        with warnings.catch_warnings():
            # SQLite's reflection skips expression indexes (ix_transactions_account_page);
            # PostgreSQL reflects and compares it.
            warnings.filterwarnings(
                "ignore", "Skipped unsupported reflection of expression-based index",
                category=SAWarning)
            warnings.filterwarnings(
                "ignore", "autogenerate skipping metadata-specified expression-based index "
                "'ix_transactions_account_page'", category=UserWarning)
            return list(compare_metadata(context, metadata))

    for region in region_router.regions:
        async with region_router.engine(region).connect() as conn:
            assert await conn.run_sync(diff) == []


async def test_an_unmigrated_database_is_refused(tmp_path: Path) -> None:
    engine = create_region_engine("eu", f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        with pytest.raises(SchemaOutOfDate, match="run `aggregator migrate`"):
            await require_head(engine, "eu")
    finally:
        await engine.dispose()


def test_migrations_are_found_from_the_package() -> None:
    assert (script_location() / "env.py").is_file()
    assert head_revision()
