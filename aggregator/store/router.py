"""Route work to the right region's database: sessions by region, or by an id's region."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aggregator.errors import MalformedId, UnknownRegion
from aggregator.ids import parse_id
from aggregator.settings import Settings
from aggregator.store.engines import blocking_sqlite_writer, create_region_engine, with_begin
from aggregator.store.quick import QuickReader
from aggregator.store.residency import REGION_KEY, WRITES_KEY, RegionSession


class RegionRouter:
    """One engine per configured region, and sessions bound to exactly one of them.

    A session from :meth:`session` refuses to write another region's entity
    (:class:`~aggregator.errors.ResidencyViolation`). There is no session spanning
    regions and no global table: work for a user goes to the region in the user's id.

    Example::

        router = RegionRouter(settings)
        async with router.for_id(user_id) as session, session.begin():
            session.add(Connection(id=new_id("con", "eu"), user_id=user_id, ...))
        await router.dispose()

    Sessions do not expire objects on commit (async code must not lazy-load), and on
    SQLite :meth:`session` takes the write lock at ``BEGIN`` while :meth:`reader` does not
    (see :mod:`aggregator.store.engines`).
    """

    def __init__(
        self, settings: Settings, *, engine_options: Mapping[str, Any] | None = None
    ) -> None:
        self._engines = {
            name: create_region_engine(name, region.database_url, **dict(engine_options or {}))
            for name, region in settings.regions.items()
        }
        self._writers = {
            name: self._maker(name, with_begin(engine, "IMMEDIATE"), writes=True)
            for name, engine in self._engines.items()
        }
        self._readers = {
            name: self._maker(name, with_begin(engine, "DEFERRED"), writes=False)
            for name, engine in self._engines.items()
        }
        self._quick = {
            name: QuickReader(name, region.database_url, self._readers[name])
            for name, region in settings.regions.items()
        }
        self._blocking: dict[str, Engine | None] = {}

    @staticmethod
    def _maker(
        region: str, engine: AsyncEngine, *, writes: bool
    ) -> async_sessionmaker[AsyncSession]:
        return async_sessionmaker(
            engine,
            sync_session_class=RegionSession,
            expire_on_commit=False,
            info={REGION_KEY: region, WRITES_KEY: writes},
        )

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self._engines)

    def engine(self, region: str) -> AsyncEngine:
        return self._engines[self.check_region(region)]

    def blocking_writer(self, region: str) -> Engine | None:
        """``region``'s synchronous SQLite writer engine, for a transaction run whole in a
        worker thread; ``None`` on PostgreSQL (see
        :func:`~aggregator.store.engines.blocking_sqlite_writer`)."""
        if region not in self._blocking:
            self._blocking[region] = blocking_sqlite_writer(region, self.engine(region))
        return self._blocking[region]

    def session(self, region: str) -> AsyncSession:
        """A session for a unit of work that writes to ``region``."""
        return self._writers[self.check_region(region)]()

    def reader(self, region: str) -> AsyncSession:
        """A session for reads only; on SQLite it does not queue behind writers."""
        return self._readers[self.check_region(region)]()

    def quick(self, region: str) -> QuickReader:
        """The region's reader for the hot app-facing reads (:mod:`aggregator.store.quick`)."""
        return self._quick[self.check_region(region)]

    def region_of(self, id_text: str) -> str:
        """The configured region an id names; typed errors for anything else."""
        region = parse_id(id_text, regions=self._engines).region
        if region is None:
            raise MalformedId("a global id names no region")
        return region

    def for_id(self, id_text: str) -> AsyncSession:
        """A write session in the region named by ``id_text`` (a user id, connection id, …)."""
        return self.session(self.region_of(id_text))

    def check_region(self, region: str) -> str:
        if region not in self._engines:
            raise UnknownRegion(f"region {region!r} is not served here")
        return region

    async def dispose(self) -> None:
        for quick in self._quick.values():
            await quick.close()
        for engine in self._engines.values():
            await engine.dispose()
        for writer in self._blocking.values():
            if writer is not None:
                writer.dispose()

    async def __aenter__(self) -> RegionRouter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()
