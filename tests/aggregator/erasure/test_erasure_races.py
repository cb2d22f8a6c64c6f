"""Erasure racing a token refresh and a sync of the same user: nothing comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, NoResultFound

from aggregator.custody import RegionCustody
from aggregator.erasure import request_erasure
from aggregator.ids import ApplicationId, new_id
from aggregator.models import (
    Connection,
    Credential,
    ErasureRequest,
    ErasureRevocation,
    ErasureState,
    Transaction,
    TransactionStatus,
)
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter, take_change_seqs
from aggregator.worker import WorkerMetrics, lease_batch
from aggregator.worker.refresh import RefreshContext, refresh_leased
from connectors import TokenSet
from tests.aggregator._factories import Linked, LinkFactory
from tests.aggregator.erasure.conftest import FAST, FakeBanks, JobFactory, rows_mentioning
from vault import DataKeyDestroyed


async def _sync_write(router: RegionRouter, keys: RegionCustody, linked: Linked,
                      hold: float = 0.0) -> None:
    """What the sync job's write transaction does (aggregator.sync.job.Syncer.sync)."""
    async with router.session("eu") as session, session.begin():
        locked = (await session.execute(
            select(Connection).where(Connection.id == linked.connection.id).with_for_update()
        )).scalar_one()
        await asyncio.sleep(hold)
        key = await keys.data_keys.load(session, locked.user_id)
        seq = await take_change_seqs(session, locked.id, 1)
        txn = Transaction(
            id=new_id("txn", "eu"), account_id=linked.account.id, connection_id=locked.id,
            user_id=locked.user_id, bank_transaction_id=new_id("txn", "eu"),
            amount=Decimal("-1.0000"), currency="EUR", booked_on=date(2025, 3, 2),
            status=TransactionStatus.BOOKED, created_seq=seq, change_seq=seq,
        )
        await keys.sealer.seal_into(key, txn, "description_sealed", "Late sync",
                                    session=session)
        session.add(txn)


async def _requested(router: RegionRouter, custody: dict[str, RegionCustody],
                     linked: Linked, app_id: ApplicationId) -> str:
    request = await request_erasure(router, custody["eu"], linked.user.id, app_id,
                                    config=FAST, actor=app_id)
    assert request is not None
    return request.id


async def test_a_sync_holding_the_connection_commits_first_and_is_erased_too(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory,
) -> None:
    linked = await make_linked("eu")
    request_id = await _requested(region_router, custody, linked, app_id)
    sync = asyncio.create_task(_sync_write(region_router, custody["eu"], linked, hold=0.3))
    await asyncio.sleep(0.1)  # the sync holds the connection (and on SQLite the write lock)

    assert await make_job().run(request_id) is ErasureState.COMPLETED
    await sync

    assert await rows_mentioning(region_router, linked.user.id) == []


async def test_a_sync_between_stop_and_delete_is_counted_and_deleted(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory,
) -> None:
    linked = await make_linked("eu")
    request_id = await _requested(region_router, custody, linked, app_id)
    pending: list[asyncio.Task[None]] = []

    def after(state: ErasureState) -> None:
        if state is ErasureState.STOPPED:
            pending.append(asyncio.ensure_future(_sync_write(region_router, custody["eu"],
                                                             linked)))

    job = make_job(checkpoint=after)
    # Let the sync land while the job revokes (its first await after the checkpoint).
    assert await job.run(request_id) is ErasureState.COMPLETED
    results = await asyncio.gather(*pending, return_exceptions=True)

    assert await rows_mentioning(region_router, linked.user.id) == []
    if not isinstance(results[0], BaseException):  # the sync won the race: counted
        async with region_router.reader("eu") as session:
            done = await session.get(ErasureRequest, request_id)
        assert done is not None
        assert done.counts is not None
        assert done.counts["transactions"] == 1


async def test_a_sync_after_erasure_finds_nothing_to_write_to(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory,
) -> None:
    linked = await make_linked("eu")
    await make_job().run(await _requested(region_router, custody, linked, app_id))
    with pytest.raises((NoResultFound, IntegrityError, DataKeyDestroyed)):
        await _sync_write(region_router, custody["eu"], linked)
    assert await rows_mentioning(region_router, linked.user.id) == []


class _SlowBank:
    """A bank whose refresh answers only after the erasure ran to completion."""

    def __init__(self, during: asyncio.Future[None]) -> None:
        self.during = during

    async def refresh(self, refresh_token: str, *, dpop_key: object = None) -> TokenSet:
        await self.during
        return TokenSet("at-new", "rt-new", utcnow() + timedelta(days=1), "accounts", "Bearer")


class _Banks:
    def __init__(self, bank: _SlowBank) -> None:
        self.bank = bank

    def oauth(self, bank_id: str) -> _SlowBank:
        return self.bank


class _Halt(BaseException):
    pass


def _halt_at(target: ErasureState) -> Callable[[ErasureState], None]:
    def check(state: ErasureState) -> None:
        if state is target:
            raise _Halt()
    return check


@pytest.mark.parametrize("answer_after", [ErasureState.STOPPED, ErasureState.COMPLETED])
async def test_a_refresh_in_flight_cannot_write_the_user_back(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory, fake_banks: FakeBanks,
    answer_after: ErasureState,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-old")
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Credential).where(Credential.id == linked.credential.id)
                              .values(refresh_due_at=utcnow() - timedelta(seconds=1)))
    [lease] = await lease_batch(region_router, "eu", "w1", now=utcnow(), limit=1,
                                lease_for=timedelta(seconds=30))
    erased: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ctx = RefreshContext(region_router, custody, _Banks(_SlowBank(erased)),  # type: ignore[arg-type]
                         WorkerMetrics(), "w1", max_interval=timedelta(hours=1))
    refresh = asyncio.create_task(refresh_leased(ctx, "eu", lease))
    await asyncio.sleep(0.2)  # in flight: marked, waiting for the bank

    request_id = await _requested(region_router, custody, linked, app_id)
    if answer_after is ErasureState.STOPPED:
        with pytest.raises(_Halt):
            await make_job(checkpoint=_halt_at(ErasureState.STOPPED), owner="e").run(request_id)
    else:
        assert await make_job().run(request_id) is ErasureState.COMPLETED
    erased.set_result(None)
    outcome = await asyncio.gather(refresh, return_exceptions=True)
    # Either the version moved under the worker (its compare-and-set stores nothing) or
    # the key is gone before it could seal the new tokens: both are a lost lease.
    assert outcome[0] == "lease_lost", outcome
    if answer_after is ErasureState.STOPPED:
        assert await make_job(owner="e").run(request_id) is ErasureState.COMPLETED
    assert await rows_mentioning(region_router, linked.user.id) == []
    async with region_router.reader("eu") as session:
        [row] = (await session.execute(select(ErasureRevocation))).scalars()
    assert row.raced_refresh  # the receipt says the bank may hold a rotated token
    assert fake_banks.revoked == ["rt-old"]
