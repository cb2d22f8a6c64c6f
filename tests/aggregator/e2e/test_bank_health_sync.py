"""Syncs at the real sandbox bank are tallied per bank: the Link flow's first sync in the
gateway's recorder, a scheduled one in the worker's, a 503 counted as the bank failing."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from aggregator.bankhealth import CallRecorder, recorder_in
from aggregator.bankhealth.reads import last_hour
from aggregator.ids import ConnectionId
from aggregator.models import SyncState
from aggregator.models.base import utcnow
from aggregator.sandbox import Faults
from aggregator.sync import BankDirectory, Syncer
from connectors import BankUnavailable
from tests.aggregator.e2e.conftest import Gateway


async def test_syncs_are_tallied_with_their_outcome_and_duration(gateway: Gateway) -> None:
    _, linked_id = await gateway.link("eu")
    connection_id = ConnectionId(linked_id)
    services = gateway.services
    router = services.router
    await recorder_in(services.extra, router).flush()  # the gateway's tally of the link
    async with router.reader("eu") as session:
        linked = (await last_hour(session, utcnow()))["sandbox-eu"]["sync"]
    assert linked.outcomes == {"complete": 1}

    banks = services.banks
    assert isinstance(banks, BankDirectory)
    recorder = CallRecorder(router, interval=3600)
    syncer = Syncer(router, services.custody, banks, recorder)
    async with router.session("eu") as session, session.begin():
        await session.execute(update(SyncState).values(last_synced_at=None))
    gateway.bank.faults = Faults(fail_next=1)  # the account list answers 503, once
    with pytest.raises(BankUnavailable):  # recorded, then raised
        await syncer.sync(connection_id, actor="worker")
    await syncer.sync(connection_id, actor="worker")
    await recorder.flush()
    async with router.reader("eu") as session:
        figures = (await last_hour(session, utcnow()))["sandbox-eu"]["sync"]
    assert figures.outcomes == {"complete": 2, "bank_unavailable": 1}
    assert figures.failures == 1
    assert figures.p95 is not None
