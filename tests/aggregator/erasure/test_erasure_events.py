"""Erasure's outbound events: ``user.erased`` names the user and the request; the user's
other events go."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from aggregator.custody import RegionCustody
from aggregator.erasure import request_erasure
from aggregator.events.hooks import connection_event
from aggregator.ids import ApplicationId
from aggregator.models import ErasureState, OutboundEvent
from aggregator.store import RegionRouter
from tests.aggregator._factories import LinkFactory
from tests.aggregator.erasure.conftest import FAST, JobFactory


async def test_erasure_emits_user_erased_and_drops_the_users_other_events(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aggregator.erasure.job")
    linked = await make_linked("eu", refresh_token="rt-erase-me")
    async with region_router.session("eu") as session, session.begin():
        await connection_event(session, linked.connection.id, "connection.created")
    request = await request_erasure(region_router, custody["eu"], linked.user.id, app_id,
                                    config=FAST, actor=app_id)
    assert request is not None
    assert await make_job().run(request.id) is ErasureState.COMPLETED
    async with region_router.reader("eu") as session:
        events = list((await session.execute(select(OutboundEvent))).scalars())
    # The event names the erased user (the app matches it to its own) and the request;
    # the row does not reference the deleted user (issue 17).
    assert [(e.type, e.data, e.user_id) for e in events] == [
        ("user.erased", {"user_id": linked.user.id, "erasure_request_id": request.id,
                         "status": "completed"}, None)
    ]
    # One log line per step, naming the request and the step (issue 17), no token.
    steps = [r.fields["step"] for r in caplog.records  # type: ignore[attr-defined]
             if r.name == "aggregator.erasure.job"]
    assert steps[0] == "stopped"
    assert steps[-1] == "completed"
    assert all(request.id in r.getMessage() for r in caplog.records
               if r.name == "aggregator.erasure.job")
    assert "rt-erase-me" not in caplog.text
