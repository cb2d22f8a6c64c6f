"""Alembic environment: one history for every region, SQLite and PostgreSQL alike.

`aggregator migrate` passes an open connection (``config.attributes["connection"]``).
The `alembic` command line (``alembic.ini`` at the repository root) instead needs
``-x url=…`` or ``-x region=NAME``, resolved through the gateway's settings, e.g.
``alembic -x region=eu revision --autogenerate -m "add webhooks"``.

``render_as_batch`` makes autogenerate write ``batch_alter_table`` blocks: SQLite can
only alter a table by copying it, and PostgreSQL runs the same blocks as plain ALTERs.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from aggregator.models import metadata

config = context.config


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    args = context.get_x_argument(as_dictionary=True)
    if "url" in args:
        return args["url"]
    from aggregator.settings import load_settings

    settings = load_settings()
    return settings.region(args.get("region", next(iter(settings.regions)))).database_url


async def run_async() -> None:
    from aggregator.store.engines import create_region_engine

    engine = create_region_engine("migrations", _url())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")

connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    asyncio.run(run_async())
