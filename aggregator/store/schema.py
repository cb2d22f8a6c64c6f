"""Alembic, driven from code: upgrade a region's database and read its revision.

The history lives in ``migrations/`` at the top of the source tree, next to the
``aggregator`` package; :func:`script_location` finds it from the installed package, so
an editable install and a checkout work from any directory. A wheel does not carry it
yet (setuptools packages only ``aggregator*``, ``connectors*``, ``vault*``); moving it to
``aggregator/migrations/`` with package data is found here too.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import aggregator
from aggregator.errors import ConfigError, SchemaOutOfDate

FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"


def script_location() -> Path:
    """The ``migrations/`` directory of this installation."""
    package = Path(aggregator.__file__).resolve().parent
    candidates = [package.parent / "migrations", package / "migrations"]
    for path in candidates:
        if (path / "env.py").is_file():
            return path
    raise ConfigError(
        "cannot find the migrations directory (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); is the gateway installed from a source checkout?"
    )


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("file_template", FILE_TEMPLATE)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigError("the migrations directory has no revisions")
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> str | None:
    """Upgrade the database behind ``engine`` in one transaction; returns its revision."""
    config = alembic_config()

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)
    return await current_revision(engine)


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def require_head(engine: AsyncEngine, region: str) -> None:
    """Refuse to serve a region whose database is behind (or ahead of) this code."""
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"region {region}: database is at revision {current or 'none'}, this build "
            f"needs {head}: run `aggregator migrate`"
        )
