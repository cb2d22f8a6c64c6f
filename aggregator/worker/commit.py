"""Group commit of rotated tokens: one transaction for the refreshes that finished meanwhile.

Each refresh hands its :class:`~aggregator.sync.tokens.Rotation` to the worker's
:class:`Committer` and waits for the outcome. While one batch commits, the next one
gathers; no timer holds a lone refresh back (an idle committer commits at once), and
under load each commit carries several credentials instead of one transaction each.
Every row remains its own compare-and-set on its claimed version
(:func:`~aggregator.sync.tokens.persist_refreshes`), so a lost lease or an erasure
skips that row and nothing else.

Crash safety is unchanged in kind: the in-flight mark was committed before the request
left, and a process that dies before this commit loses the tokens of the refreshes
waiting in it, exactly as it would lose one uncommitted refresh; waiting adds at most
one commit's duration to that window (see :mod:`aggregator.worker.refresh`). When a
batch's transaction fails as a whole (a deadlock, a dropped connection), each of its
rotations is retried in a transaction of its own, so one bad row cannot cost the others
their tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta

from aggregator.custody import RegionCustody
from aggregator.store import RegionRouter
from aggregator.sync.tokens import Rotation, persist_refreshes

log = logging.getLogger(__name__)

_Waiting = tuple[Rotation, "asyncio.Future[bool]"]


class Committer:
    """Commits rotations per region in batches of at most ``max_batch``; see the module doc.

    Example::

        committer = Committer(router, custody, max_interval=timedelta(days=1))
        stored = await committer.persist("eu", Rotation(credential, claimed, tokens, key))
        ...
        await committer.drain()   # before the router is disposed
    """

    def __init__(
        self, router: RegionRouter, custody: Mapping[str, RegionCustody], *,
        max_interval: timedelta | None, max_batch: int = 64,
        before_commit: Callable[[], None] | None = None,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._router = router
        self._custody = custody
        self._max_interval = max_interval
        self._max_batch = max_batch
        self._before_commit = before_commit
        self._on_commit = on_commit
        self._queues: dict[str, list[_Waiting]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def persist(self, region: str, rotation: Rotation) -> bool:
        """Whether ``rotation`` was stored (False: its lease was lost or its user erased).

        The commit goes on if the caller is cancelled meanwhile: the bank has already
        rotated, so the new tokens must land whatever happens to the waiting task.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(region, []).append((rotation, future))
        if region not in self._flushers:
            self._flushers[region] = asyncio.create_task(self._flush(region),
                                                         name=f"commit-{region}")
        return await asyncio.shield(future)

    async def settled(self, within: float) -> None:
        """Wait, at most ``within`` seconds, until no rotation handed over so far waits
        for its commit; returns at once when none does."""
        if not self._flushers:
            return
        pending = asyncio.gather(*self._flushers.values(), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await asyncio.shield(pending)

    async def drain(self) -> None:
        """Wait until every rotation handed over so far is committed (or has failed)."""
        while self._flushers:
            await asyncio.gather(*self._flushers.values(), return_exceptions=True)

    async def _flush(self, region: str) -> None:
        batch: list[_Waiting] = []
        try:
            while queue := self._queues.get(region):
                batch, self._queues[region] = queue[:self._max_batch], queue[self._max_batch:]
                outcomes = await self._commit(region, [rotation for rotation, _ in batch])
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                batch = []
        except BaseException as exc:  # cancelled with the loop: nobody may wait forever
            for _, future in [*batch, *self._queues.pop(region, [])]:
                if not future.done():
                    future.set_exception(exc)
            raise
        finally:
            self._flushers.pop(region, None)

    async def _commit(self, region: str, rotations: list[Rotation]) -> list[bool | Exception]:
        custody = self._custody[region]
        try:
            stored: list[bool | Exception] = list(await persist_refreshes(
                self._router, custody, rotations, max_interval=self._max_interval,
                before_commit=self._before_commit,
            ))
        except Exception as exc:
            if len(rotations) == 1:
                return [exc]  # the waiting refresh raises it
            log.warning("committing %d refreshed credentials together failed; "
                        "committing each on its own", len(rotations), exc_info=True)
            return [await self._commit_one(custody, rotation) for rotation in rotations]
        self._committed(sum(1 for ok in stored if ok is True))
        return stored

    async def _commit_one(self, custody: RegionCustody, rotation: Rotation) -> bool | Exception:
        try:
            [stored] = await persist_refreshes(self._router, custody, [rotation],
                                               max_interval=self._max_interval)
        except Exception as exc:
            return exc
        self._committed(int(stored))
        return stored

    def _committed(self, rows: int) -> None:
        if self._on_commit is not None:
            self._on_commit(rows)
