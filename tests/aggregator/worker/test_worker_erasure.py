"""The worker's erasure pass: resumes a crashed request, retries and then expires revocations."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from aggregator.custody import RegionCustody
from aggregator.erasure import request_erasure
from aggregator.ids import ApplicationId
from aggregator.models import ErasureRequest, ErasureRevocation, ErasureState, RevocationOutcome
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.worker.erasure import ErasureSweep
from tests.aggregator._factories import LinkFactory
from tests.aggregator.erasure.conftest import (
    FAST,
    FakeBanks,
    JobFactory,
    rows_mentioning,
)
from tests.aggregator.erasure.conftest import fake_banks as fake_banks  # fixture
from tests.aggregator.erasure.conftest import make_job as make_job  # fixture


class Crash(BaseException):
    """The gateway process dying right after a step committed."""


async def _request(router: RegionRouter, custody: dict[str, RegionCustody],
                   user_id: str, app_id: ApplicationId) -> str:
    request = await request_erasure(router, custody["eu"], user_id, app_id, config=FAST,
                                    actor=app_id)
    assert request is not None
    return request.id


async def _load(router: RegionRouter, request_id: str) -> ErasureRequest:
    async with router.reader("eu") as session:
        found = await session.get(ErasureRequest, request_id)
    assert found is not None
    return found


async def _revocation(router: RegionRouter, request_id: str) -> ErasureRevocation:
    async with router.reader("eu") as session:
        return (await session.execute(select(ErasureRevocation).where(
            ErasureRevocation.request_id == request_id))).scalar_one()


async def test_the_worker_completes_an_erasure_whose_gateway_crashed_mid_job(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory, fake_banks: FakeBanks,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-erase-me")
    request_id = await _request(region_router, custody, linked.user.id, app_id)

    def die(state: ErasureState) -> None:
        if state is ErasureState.REVOKED:
            raise Crash(state.value)

    with pytest.raises(Crash):
        await make_job(checkpoint=die).run(request_id)
    sweep = ErasureSweep(region_router, custody, fake_banks, config=FAST)
    stop = asyncio.Event()
    # While the dead run's lease holds, the worker leaves the request alone.
    assert await sweep.run_once(stop) == 0
    # Revocation outcomes commit grant by grant; the state moves on with the final step.
    assert (await _load(region_router, request_id)).state is ErasureState.STOPPED
    assert (await _revocation(region_router, request_id)).outcome is RevocationOutcome.REVOKED

    later = (await _load(region_router, request_id)).lease_expires_at
    assert later is not None
    assert await sweep.run_once(stop, now=later + timedelta(seconds=1)) == 1

    assert (await _load(region_router, request_id)).state is ErasureState.COMPLETED
    assert await rows_mentioning(region_router, linked.user.id) == []
    assert fake_banks.revoked == ["rt-erase-me"]  # not revoked again on resume


async def test_failed_revocations_are_retried_by_the_worker_then_their_escrow_expires(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory, fake_banks: FakeBanks,
) -> None:
    first = await make_linked("eu", refresh_token="rt-first")
    second = await make_linked("eu", refresh_token="rt-second")
    fake_banks.down.add("sandbox")
    retried = await _request(region_router, custody, first.user.id, app_id)
    expired = await _request(region_router, custody, second.user.id, app_id)
    for request_id in (retried, expired):
        assert await make_job().run(request_id) is ErasureState.COMPLETED
        assert (await _revocation(region_router, request_id)).outcome is RevocationOutcome.FAILED

    sweep = ErasureSweep(region_router, custody, fake_banks, config=FAST,
                         retry_every=timedelta(hours=1), escrow_for=timedelta(days=7))
    stop = asyncio.Event()
    calls = len(fake_banks.calls)
    await sweep.run_once(stop)  # just tried: not yet again
    assert len(fake_banks.calls) == calls

    fake_banks.down.clear()
    fake_banks.calls.clear()
    soon = utcnow() + timedelta(hours=2)
    sweep.batch = 1  # one request per pass: the second waits for the next pass
    assert await sweep.run_once(stop, now=soon) == 1
    assert len(fake_banks.calls) == 1
    done, waiting = sorted([retried, expired])  # the pass takes requests in id order
    assert (await _revocation(region_router, done)).outcome is RevocationOutcome.REVOKED

    fake_banks.down.add("sandbox")
    await sweep.run_once(stop, now=utcnow() + timedelta(days=8))
    left = await _revocation(region_router, waiting)
    assert left.outcome is RevocationOutcome.FAILED
    assert left.token_escrow is None  # given up after the escrow period
