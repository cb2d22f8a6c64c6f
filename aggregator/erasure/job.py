"""The erasure job: runs a request's remaining steps, resumable by any process.

Steps (docs/architecture.md, "Erasure"; :mod:`.steps`)::

    requested ─stop─▶ stopped ─revoke, then delete + shred + finish─▶ completed

Two state advances are committed, each with its step's work. Revocation commits each
grant's outcome on its own row, so it needs no state of its own: a resumed run at
``stopped`` tries only the grants still ``pending``. The grants are tried concurrently
(within :class:`~aggregator.erasure.revocation.RevocationLimits`), and the final
transaction starts only once every attempt has ended and its outcome is committed.
Deleting, shredding and finishing share one transaction (all or nothing). ``revoked``,
``deleted`` and ``shredded`` are still resumed (requests an older release left there)
but no longer written.

A run first takes the request's lease (a compare-and-set on ``lease_owner`` /
``lease_expires_at``), so the in-process background task and a worker calling
:func:`resume_pending` do not work on one request at once; a run that dies leaves the
lease to expire and the next :func:`resume_pending` picks the request up at its state.
Even two runners at once stay correct: every step's state compare-and-set lets only
one of them commit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, select, update

from aggregator.custody import RegionCustody
from aggregator.erasure import steps
from aggregator.erasure.requests import ErasureConfig
from aggregator.erasure.revocation import Banks, revoke_pending
from aggregator.models import ErasureRequest, ErasureState
from aggregator.models.base import table_of, utcnow
from aggregator.store import RegionRouter

log = logging.getLogger(__name__)
_requests = table_of(ErasureRequest)

#: Called with each step reached, once its work is durable (``revoked``: every grant's
#: outcome committed); tests raise from it to simulate a crash there.
Checkpoint = Callable[[ErasureState], None]
#: At most this many passes of "a connection appeared after stop: enlist and revoke it".
_ENLIST_PASSES = 3


#: What the final transaction did, for progress reports, from the state it started at.
_CONCLUDED = {
    ErasureState.STOPPED: (ErasureState.DELETED, ErasureState.SHREDDED),
    ErasureState.REVOKED: (ErasureState.DELETED, ErasureState.SHREDDED),
    ErasureState.DELETED: (ErasureState.SHREDDED,),
    ErasureState.SHREDDED: (),
}


def _ignore(_state: ErasureState) -> None:
    return None


@dataclass
class ErasureJob:
    """Everything a run needs; build one per process.

    Example::

        job = ErasureJob(router, custody, banks)
        state = await job.run("era_eu_…")            # ErasureState.COMPLETED
        await resume_pending(router, custody, banks)  # from a worker, periodically
    """

    router: RegionRouter
    custody: Mapping[str, RegionCustody]
    banks: Banks
    config: ErasureConfig = field(default_factory=ErasureConfig)
    owner: str = field(default_factory=lambda: f"erasure:{os.getpid()}")
    checkpoint: Checkpoint = _ignore
    actor: str = "gateway"

    async def run(self, request_id: str, *, now: datetime | None = None,
                  progress: Checkpoint = _ignore) -> ErasureState:
        """Run the request's remaining steps; returns the state reached.

        Returns early (the state as found) when another run holds the lease.
        """
        region = self.router.region_of(request_id)

        def reached(state: ErasureState) -> None:
            # One line per step (docs/operations.md, "What runs"): request id and state.
            log.info("erasure %s: %s", request_id, state.value, extra={"fields": {
                "erasure_request_id": request_id, "region": region, "step": state.value}})
            progress(state)
            self.checkpoint(state)

        try:
            request, stopped = await self._claim(region, request_id, now or utcnow())
        except Exception as exc:  # the claim rolled back with the stop step: no lease held
            await self._note(region, request_id, getattr(exc, "code", "internal_error"))
            raise
        if request is None:
            return await self._state(region, request_id)
        try:
            if stopped:
                reached(ErasureState.STOPPED)
            for _ in range(len(ErasureState)):
                try:
                    await self._step(region, request, reached)
                except steps.StepLost:
                    request = await self._load(region, request_id)  # another runner moved on
                    reached(request.state)
                if request.state.done:
                    return request.state
        except Exception as exc:
            await self._release(region, request_id, getattr(exc, "code", "internal_error"))
            raise
        return await self._state(region, request_id)

    async def _step(self, region: str, request: ErasureRequest,
                    reached: Checkpoint) -> None:
        """Run the step after ``request.state`` and move the in-memory copy along."""
        custody = self.custody[region]
        if request.state is ErasureState.REQUESTED:  # _claim stops every fresh request
            raise RuntimeError(f"erasure {request.id} was not stopped")
        if request.state is ErasureState.STOPPED:
            await revoke_pending(self.router, custody, self.banks, request.id, self.config)
            reached(ErasureState.REVOKED)  # committed grant by grant; the state stays
        before = request.state
        request.counts = await self._conclude(region, request)
        request.state = ErasureState.COMPLETED
        for state in (*_CONCLUDED.get(before, ()), ErasureState.COMPLETED):
            reached(state)

    async def _conclude(self, region: str, request: ErasureRequest) -> dict[str, int]:
        custody = self.custody[region]
        for _ in range(_ENLIST_PASSES):
            async with self.router.session(region) as session, session.begin():
                if request.state in (ErasureState.DELETED, ErasureState.SHREDDED) or not (
                    await steps.unrevoked(session, request)
                ):
                    return await steps.conclude(session, custody, request, utcnow(),
                                                actor=self.actor)
                await steps.enlist(session, custody, request.id, steps._user(request), utcnow())
            # A Link callback in flight at stop created a connection: revoke it first.
            await revoke_pending(self.router, custody, self.banks, request.id, self.config)
        raise RuntimeError(f"erasure {request.id}: connections keep appearing; retry later")

    async def _load(self, region: str, request_id: str) -> ErasureRequest:
        async with self.router.reader(region) as session:
            found = await session.get(ErasureRequest, request_id)
        if found is None:
            raise LookupError(f"no erasure request {request_id}")
        return found

    async def _state(self, region: str, request_id: str) -> ErasureState:
        return (await self._load(region, request_id)).state

    async def _claim(
        self, region: str, request_id: str, now: datetime
    ) -> tuple[ErasureRequest | None, bool]:
        """Take the lease and read the request (kept current in memory from here on);
        None when another run holds it. A fresh request is stopped in the same
        transaction (the claim needs no commit of its own): then the flag is True."""
        c = _requests.c
        async with self.router.session(region) as session, session.begin():
            request = (await session.execute(
                update(ErasureRequest).where(
                    c.id == request_id, c.state != ErasureState.COMPLETED,
                    or_(c.lease_expires_at.is_(None), c.lease_expires_at <= now,
                        c.lease_owner == self.owner[:64]),
                ).values(lease_owner=self.owner[:64], lease_expires_at=now + self.config.lease,
                         runs=c.runs + 1)
                .returning(ErasureRequest).execution_options(synchronize_session=False)
            )).scalar_one_or_none()
            if request is None:
                return None, False
            session.expunge(request)
            if request.state is not ErasureState.REQUESTED:
                return request, False
            stopped_at = utcnow()
            await steps.stop(session, self.custody[region], request, stopped_at)
        request.started_at = request.started_at or stopped_at
        request.state = ErasureState.STOPPED
        return request, True

    async def _note(self, region: str, request_id: str, error: str) -> None:
        c = _requests.c
        async with self.router.session(region) as session, session.begin():
            await session.execute(
                update(_requests).where(c.id == request_id, c.state == ErasureState.REQUESTED)
                .values(last_error=str(error)[:64])
            )

    async def _release(self, region: str, request_id: str, error: str) -> None:
        c = _requests.c
        async with self.router.session(region) as session, session.begin():
            await session.execute(
                update(_requests).where(c.id == request_id, c.lease_owner == self.owner[:64])
                .values(lease_owner=None, lease_expires_at=None, last_error=str(error)[:64])
            )

    async def run_logged(self, request_id: str) -> None:
        """:meth:`run` for a background task: failures are logged, the request stays open
        for :func:`resume_pending`."""
        try:
            await self.run(request_id)
        except Exception:
            log.exception("erasure %s: run failed; it resumes on the next pass", request_id)


async def pending_ids(router: RegionRouter, region: str, now: datetime) -> list[str]:
    """Open requests of ``region`` whose lease is free, oldest deadline first."""
    c = _requests.c
    async with router.reader(region) as session:
        return list((await session.execute(
            select(c.id).where(
                c.state != ErasureState.COMPLETED,
                or_(c.lease_expires_at.is_(None), c.lease_expires_at <= now),
            ).order_by(c.deadline_at, c.id)
        )).scalars())


async def resume_pending(
    router: RegionRouter, custody: Mapping[str, RegionCustody], banks: Banks, *,
    config: ErasureConfig | None = None, now: datetime | None = None,
    checkpoint: Checkpoint = _ignore, limit: int = 100,
) -> dict[str, ErasureState]:
    """Run every open erasure request no live run holds, in every region of ``router``.

    For the worker's schedule (and after a crash). Returns the state each request
    reached; a request whose run fails is logged and left for the next pass.
    """
    now = now or utcnow()
    job = ErasureJob(router, custody, banks, config or ErasureConfig(), checkpoint=checkpoint,
                     actor="worker")
    out: dict[str, ErasureState] = {}
    for region in router.regions:
        for request_id in (await pending_ids(router, region, now))[:limit]:
            try:
                out[request_id] = await job.run(request_id, now=now)
            except Exception:
                log.exception("erasure %s: resumed run failed", request_id)
    return out
