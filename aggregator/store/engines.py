"""One async engine per region: SQLite tuned for a gateway and a worker, or PostgreSQL.

SQLite (the embedded default) gets, on every new connection:

- ``journal_mode=WAL``: readers never block the writer nor the writer the readers;
- ``foreign_keys=ON``: SQLite ignores foreign keys unless told, and erasure relies on
  ``ON DELETE CASCADE``;
- ``busy_timeout``: a second writer waits for the lock instead of failing at once;
- ``synchronous=NORMAL``: durable across application crashes in WAL mode, one fsync per
  checkpoint instead of per commit.

pysqlite's own transaction handling is switched off and this module emits ``BEGIN``
itself (the SQLAlchemy recipe for SQLite transactions): a read-then-write transaction
that started ``DEFERRED`` fails with ``SQLITE_BUSY`` when another connection wrote in
between, and no busy timeout helps, because WAL cannot upgrade a stale snapshot. Write
sessions therefore begin ``IMMEDIATE`` (they take the write lock first and queue behind
other writers, which is exactly the serialisation the audit chain and the seal ledger
need); read-only sessions begin ``DEFERRED``. PostgreSQL needs none of this.

:func:`blocking_sqlite_writer` opens a second, synchronous engine on the same SQLite file
for writers that batch (the Plaid webhook receiver): with aiosqlite every statement, and
every cursor open, fetch and close, is a hand-over to the connection's thread and back
(13 per webhook batch), which cost more CPU than the batch's SQL; a whole transaction run
in one worker thread is one hand-over (docs/architecture.md, "Performance notes"). It
gets the same connection settings and the same residency guard.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aggregator.store.residency import install_engine_guard

BEGIN_OPTION = "aggregator_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS = 10_000

BeginMode = Literal["DEFERRED", "IMMEDIATE"]


def create_region_engine(region: str, url: str, **options: Any) -> AsyncEngine:
    """The engine of ``region``'s database, with the residency guard installed."""
    parsed = make_url(url)
    # A statement's parameters (sealed blobs, digests, an app's idempotency key, a
    # webhook URL) must not reach exception messages and from there logs or problem
    # details: SQLAlchemy then prints "[SQL parameters hidden]" instead.
    options.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, **options)
        if parsed.database and parsed.database != ":memory:":
            private_file(engine, Path(parsed.database))
        _tune_sqlite(engine.sync_engine)
    else:
        options.setdefault("pool_pre_ping", True)
        engine = create_async_engine(parsed, **options)
    install_engine_guard(engine.sync_engine, region)
    return engine


def private_file(engine: AsyncEngine, path: Path) -> None:
    """Make ``path`` 0600 in a 0700 directory, as the local keyring is, when SQLite creates it.

    The file holds sealed data, digests and the audit trail: not readable in clear, but
    not for other local users either. Missing directories are created 0700 now; the file
    itself is left for SQLite to create at the first connection (its absence means "not
    migrated yet" to ``aggregator keys``), then set to 0600 before anything is written.
    SQLite gives its ``-wal`` and ``-shm`` files the main file's mode. An existing file or
    directory keeps the mode the operator gave it.
    """
    for directory in reversed(path.parents):
        if not directory.exists():
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
                os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    if path.exists():
        return

    done: list[bool] = []

    def tighten(_dbapi_connection: Any, _record: Any) -> None:
        if done:
            return
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                os.chmod(path, 0o600)
            done.append(True)

    event.listen(engine.sync_engine, "connect", tighten)


def with_begin(engine: AsyncEngine, mode: BeginMode) -> AsyncEngine:
    """The same engine (same pool) whose SQLite transactions begin in ``mode``."""
    return engine.execution_options(**{BEGIN_OPTION: mode})


def blocking_sqlite_writer(region: str, engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on ``engine``'s SQLite file whose transactions begin
    ``IMMEDIATE``, for work run whole in a thread; ``None`` unless a SQLite file."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    # pysqlite on a file: a QueuePool, and connections usable from any thread.
    writer = create_engine(url.set(drivername="sqlite"), hide_parameters=True)
    _tune_sqlite(writer)
    install_engine_guard(writer, region)
    return writer.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "synchronous=NORMAL",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"unknown SQLite transaction mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")
