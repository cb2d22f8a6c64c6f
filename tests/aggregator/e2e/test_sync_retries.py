"""Scheduled syncs retried after a transient failure, within the budget: a 5xx once, a 429
with ``Retry-After``, and the refund rule (a call that never reached the bank is not
counted; an answered one is), for scheduled and on-demand syncs alike."""

from __future__ import annotations

import socket
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from aggregator.models import DataType, SyncSpend, SyncState
from aggregator.models.base import utcnow
from aggregator.sandbox import Faults
from aggregator.sync import BankDirectory, Syncer
from aggregator.sync.snapshot import CallLog, read_snapshot
from aggregator.worker.sync_schedule import RETRY_BASE, RETRY_CEILING, SyncSchedule
from connectors import BankUnavailable, get_dialect
from tests.aggregator.e2e.conftest import Gateway


def _schedule(gateway: Gateway) -> tuple[SyncSchedule, BankDirectory]:
    services, banks = gateway.services, gateway.services.banks
    assert isinstance(banks, BankDirectory)
    return SyncSchedule(services.router, banks,
                        Syncer(services.router, services.custody, banks)), banks


async def _stale(gateway: Gateway) -> None:
    async with gateway.services.router.session("eu") as session, session.begin():
        await session.execute(update(SyncState).values(
            last_synced_at=utcnow() - timedelta(days=1)))


async def _state(gateway: Gateway) -> SyncState:
    async with gateway.services.router.reader("eu") as session:
        return (await session.execute(select(SyncState))).scalar_one()


async def _spends(gateway: Gateway) -> list[tuple[str, DataType]]:
    async with gateway.services.router.reader("eu") as session:
        rows = (await session.execute(select(SyncSpend.account_id, SyncSpend.data_type)))
        return sorted(((a, t) for a, t in rows), key=lambda r: (r[0], r[1].value))


async def test_a_5xx_once_is_retried_soon_and_only_answered_calls_stay_spent(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("eu")
    await _stale(gateway)
    schedule, banks = _schedule(gateway)
    policy = banks.profile("sandbox-eu").sync
    failed_at = utcnow()
    gateway.bank.faults = Faults(fail_next=1)  # the account list answers 503, once

    assert not await schedule.sync_one("eu", connection_id, policy, now=failed_at)

    state = await _state(gateway)
    assert state.last_outcome == "failed"
    assert state.retry_attempts == 1
    assert state.retry_at == failed_at + RETRY_BASE  # well inside the 6 h interval
    # The account list was answered (503): the bank may count it, so its unit stays.
    # The per-account calls were never made: refunded.
    assert await _spends(gateway) == [("", DataType.ACCOUNTS)]
    # Not due before its retry time, due at it, although a unit was spent this interval.
    assert connection_id not in await schedule.due("eu", "sandbox-eu", policy,
                                                   failed_at + timedelta(seconds=30))
    retry = failed_at + RETRY_BASE + timedelta(seconds=1)
    assert connection_id in await schedule.due("eu", "sandbox-eu", policy, retry)

    assert await schedule.sync_one("eu", connection_id, policy, now=retry)

    state = await _state(gateway)
    assert state.last_outcome == "complete"
    assert (state.retry_at, state.retry_attempts) == (None, 0)
    spends = await _spends(gateway)
    assert spends.count(("", DataType.ACCOUNTS)) == 2
    assert len(spends) == 2 + 2 * len({a for a, _ in spends if a})


async def test_an_on_demand_sync_refunds_the_calls_that_never_reached_the_bank(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("eu")
    linked = await _spends(gateway)  # the Link flow's first sync books nothing
    gateway.bank.faults = Faults(fail_next=1)  # the account list answers 503, once

    failed = await gateway.api.post(f"/v1/connections/{connection_id}/sync")

    assert failed.status_code == 503, failed.text
    # Answered (503): the bank may count it, its unit stays; the per-account calls were
    # never made: refunded, as a scheduled sync's are.
    assert await _spends(gateway) == sorted([*linked, ("", DataType.ACCOUNTS)],
                                            key=lambda r: (r[0], r[1].value))
    synced = await gateway.api.post(f"/v1/connections/{connection_id}/sync")
    assert synced.status_code == 200, synced.text
    spends = await _spends(gateway)
    assert spends.count(("", DataType.ACCOUNTS)) == 2
    assert len(spends) == 2 + 2 * len({a for a, _ in spends if a})


@pytest.mark.parametrize(("retry_after", "expected"), [
    (120, timedelta(seconds=120)),  # honoured
    (86_400, RETRY_CEILING),  # never later than the ceiling
])
async def test_retry_after_is_honoured_up_to_the_ceiling(
    gateway: Gateway, retry_after: int, expected: timedelta,
) -> None:
    _, connection_id = await gateway.link("eu")
    await _stale(gateway)
    schedule, banks = _schedule(gateway)
    failed_at = utcnow()
    gateway.bank.faults = Faults(rate_limit_retry_after=retry_after)

    assert not await schedule.sync_one("eu", connection_id, banks.profile("sandbox-eu").sync,
                                       now=failed_at)

    state = await _state(gateway)
    assert state.retry_at == failed_at + expected


async def test_a_call_refused_while_connecting_never_counts(gateway: Gateway) -> None:
    """Against a loopback port nothing listens on: the connection is refused, nothing sent."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    calls = CallLog()
    async with httpx.AsyncClient(timeout=5) as client:
        dialect = get_dialect("obie")(client, f"http://127.0.0.1:{port}/open-banking/v3.1/aisp",
                                      "token")
        with pytest.raises(BankUnavailable):
            await read_snapshot(dialect, None, calls=calls)
    assert calls.sent == set()
