"""Alembic, driven from code: upgrade a region's database and read its revision.

The history lives in ``migrations/`` at the top of the source tree, next to the
``aggregator`` package; :func:`script_location` finds it from the installed package, so
an editable install and a checkout work from any directory. A wheel does not carry it
yet (setuptools packages only ``aggregator*``, ``connectors*``, ``vault*``); moving it to
``aggregator/migrations/`` with package data is found here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import exc as sa_exc
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


async def upgrade(engine: AsyncEngine, revision: str = "head", *,
                  region: str | None = None) -> str | None:
    """Upgrade the database behind ``engine`` in one transaction; returns its revision."""
    config = alembic_config()

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    with reaching(engine, region):
        async with engine.begin() as conn:
            await conn.run_sync(run)
    return await current_revision(engine, region=region)


async def current_revision(engine: AsyncEngine, *, region: str | None = None) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    with reaching(engine, region):
        async with engine.connect() as conn:
            return await conn.run_sync(read)


class DatabaseUnreachable(ConfigError):
    """A region's database did not answer, or refused the gateway's credentials."""

    code = "database_unreachable"


@contextmanager
def reaching(engine: AsyncEngine, region: str | None) -> Iterator[None]:
    """Turn "cannot connect" into an operator's message: region, setting, URL, fix.

    The URL is shown without its password; the driver's first line says what failed
    (refused, unknown host, authentication), which is what the operator acts on.
    """
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError, OSError) as error:
        if isinstance(error, sa_exc.DBAPIError) and not _is_connect_failure(error):
            raise
        name = region or "?"
        url = engine.url.render_as_string(hide_password=True)
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
        raise DatabaseUnreachable(
            f"region {name}: cannot reach its database {url} ({reason}); it is set by "
            f"regions.{name}.database_url or AGGREGATOR_REGION_{name.upper()}_DATABASE_URL: "
            "start the server, or fix the host, port, database name or credentials there"
        ) from None


def _is_connect_failure(error: sa_exc.DBAPIError) -> bool:
    return bool(error.connection_invalidated) or "connect" in str(error.orig).lower()


async def require_head(engine: AsyncEngine, region: str) -> None:
    """Refuse to serve a region whose database is behind (or ahead of) this code."""
    current, head = await current_revision(engine, region=region), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"region {region}: database is at revision {current or 'none'}, this build "
            f"needs {head}: run `aggregator migrate`"
        )
