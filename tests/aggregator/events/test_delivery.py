"""Delivery over a real loopback socket: signed, retried until it lands, leased, replayable."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from aggregator.custody import RegionCustody
from aggregator.events import SCHEDULE, UnsafeUrl, configure, deliver_due
from aggregator.events.delivery import next_attempt
from aggregator.events.endpoints import seal_clear_urls, url_of
from aggregator.events.replay import redeliver
from aggregator.ids import ApplicationId
from aggregator.models import Application, OutboundEvent
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from connectors import EgressPolicy, egress_client
from tests.aggregator._logs import json_log_lines
from tests.aggregator.events.conftest import Emit, Receiver

#: The receiver listens on 127.0.0.1: these tests opt into loopback, as development does.
DEV = EgressPolicy.development()


async def _event(router: RegionRouter, event_id: str) -> OutboundEvent:
    async with router.reader(router.region_of(event_id)) as session:
        found = (await session.execute(
            select(OutboundEvent).where(OutboundEvent.id == event_id)
        )).scalar_one()
    return found


async def _setup(router: RegionRouter, custody: dict[str, RegionCustody],
                 app_id: ApplicationId, url: str) -> str:
    change = await configure(router, custody, app_id, url=url, policy=DEV)
    assert change is not None
    assert change.secret is not None
    return change.secret


def test_retries_span_more_than_a_day_with_jitter_never_shortening() -> None:
    rng, now, at = random.Random(7), utcnow(), utcnow()
    for n in range(1, len(SCHEDULE) + 1):
        due = next_attempt(n, at, rng)
        assert due is not None
        assert due >= at + SCHEDULE[n - 1]
        at = due
    assert at - now >= timedelta(hours=24)
    assert next_attempt(len(SCHEDULE) + 1, at, rng) is None


async def test_receiver_failing_n_times_still_gets_every_event_verifiably(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    receiver: Receiver, emit_erased: Emit,
) -> None:
    secret = await _setup(region_router, custody, app_id, receiver.url)
    ids = [await emit_erased("eu"), await emit_erased("us")]
    receiver.fail = 6
    now = utcnow()
    async with egress_client(DEV) as http:
        for _ in range(5):
            await deliver_due(region_router, http, custody, policy=DEV, owner="w1", now=now)
            now += SCHEDULE[-1] * 1.3  # past any jittered retry
    assert {e: (await _event(region_router, e)).delivered_at is not None for e in ids} == {
        e: True for e in ids}
    got = {r.headers["webhook-id"] for r in receiver.requests}
    assert got == set(ids)
    for request in receiver.requests:
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload["type"] == "user.erased"
        assert set(payload["data"]) == {"erasure_request_id", "status"}
    assert (await _event(region_router, ids[0])).attempts + (
        await _event(region_router, ids[1])).attempts == 8


async def test_redirects_are_not_followed_and_count_as_failures(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    receiver: Receiver, emit_erased: Emit,
) -> None:
    await _setup(region_router, custody, app_id, receiver.url)
    receiver.fail, receiver.status = 1, 302
    receiver.extra_headers = "location: http://169.254.169.254/\r\n"
    event_id = await emit_erased("eu")
    async with egress_client(DEV) as http:
        stats = await deliver_due(region_router, http, custody, policy=DEV, owner="w1")
    event = await _event(region_router, event_id)
    assert stats.failed == 1
    assert len(receiver.requests) == 1
    assert event.last_status == 302
    assert event.delivered_at is None
    assert event.next_attempt_at is not None
    assert event.attempts == 1


async def test_two_workers_never_deliver_one_event_twice_at_once(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    receiver: Receiver, emit_erased: Emit,
) -> None:
    await _setup(region_router, custody, app_id, receiver.url)
    ids = {await emit_erased("eu") for _ in range(6)}
    async with egress_client(DEV) as http:
        a, b = await asyncio.gather(
            deliver_due(region_router, http, custody, policy=DEV, owner="w1", limit=4),
            deliver_due(region_router, http, custody, policy=DEV, owner="w2", limit=4),
        )
        await deliver_due(region_router, http, custody, policy=DEV, owner="w3")
    assert a.delivered + b.delivered >= 4
    sent = [r.headers["webhook-id"] for r in receiver.requests]
    assert sorted(sent) == sorted(ids)


async def test_redelivery_sends_a_delivered_event_again(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    receiver: Receiver, emit_erased: Emit,
) -> None:
    secret = await _setup(region_router, custody, app_id, receiver.url)
    event_id = await emit_erased("us")
    async with egress_client(DEV) as http:
        await deliver_due(region_router, http, custody, policy=DEV, owner="w1")
        assert (await _event(region_router, event_id)).delivered_at is not None
        assert await redeliver(region_router, "us", app_id, event_id) is not None
        await deliver_due(region_router, http, custody, policy=DEV, owner="w1")
    first, second = receiver.requests
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
    Webhook(secret).verify(second.body, second.headers)


async def test_rotation_signs_with_both_secrets_until_the_old_one_expires(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    receiver: Receiver, emit_erased: Emit,
) -> None:
    old = await _setup(region_router, custody, app_id, receiver.url)
    rotated = await configure(region_router, custody, app_id, rotate=True)
    assert rotated is not None
    assert rotated.secret is not None
    assert rotated.previous_expires_at is not None
    await emit_erased("eu")
    async with egress_client(DEV) as http:
        await deliver_due(region_router, http, custody, policy=DEV, owner="w1")
    (request,) = receiver.requests
    assert request.headers["webhook-signature"].count("v1,") == 2
    Webhook(rotated.secret).verify(request.body, request.headers)
    Webhook(old).verify(request.body, request.headers)
    assert json.loads(request.body)["type"] == "user.erased"


async def test_secrets_are_stored_sealed(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    receiver: Receiver,
) -> None:
    secret = await _setup(region_router, custody, app_id, receiver.url)
    raw = secret.encode()
    for region in region_router.regions:
        async with region_router.engine(region).connect() as conn:
            rows = (await conn.exec_driver_sql(
                "SELECT webhook_url, webhook_url_sealed, webhook_secret_sealed "
                "FROM applications")).all()
        url, url_sealed, sealed = tuple(rows[0])
        assert url is None  # a URL may carry a credential: sealed too
        assert receiver.url.encode() not in bytes(url_sealed)
        assert b"127.0.0.1" not in bytes(url_sealed)
        assert raw not in bytes(sealed)
        assert raw[6:] not in bytes(sealed)
    async with region_router.reader("eu") as session:
        app = await session.get(Application, app_id)
        assert app is not None
        assert url_of(custody["eu"].hasher, app) == receiver.url


class Dns:
    """A resolver whose answers the test scripts, one per question (the last repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)

    async def __call__(self, host: str, port: int) -> list[str]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_a_name_resolving_to_a_private_address_is_refused_at_registration(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
) -> None:
    for answer in (["10.0.0.7"], ["169.254.169.254"], ["93.184.216.34", "127.0.0.1"]):
        with pytest.raises(UnsafeUrl, match="resolves to"):
            await configure(region_router, custody, app_id, url="https://hooks.evil.example/",
                            resolver=Dns(answer))
    async with region_router.reader("eu") as session:
        app = await session.get(Application, app_id)
        assert app is not None
        assert app.webhook_url is None  # nothing was written
        assert app.webhook_url_sealed is None


async def test_an_endpoint_whose_name_rebinds_to_loopback_is_refused_at_delivery(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    receiver: Receiver, emit_erased: Emit,
) -> None:
    port = httpx.URL(receiver.url).port
    url = f"https://hooks.rebind.example:{port}/hooks"
    dns = Dns(["93.184.216.34"], ["127.0.0.1"])  # public when registered, loopback later
    await configure(region_router, custody, app_id, url=url, resolver=dns)
    event_id = await emit_erased("eu")
    async with egress_client(EgressPolicy(), resolver=dns) as http:
        stats = await deliver_due(region_router, http, custody, owner="w1")
    assert stats.failed == 1
    event = await _event(region_router, event_id)
    assert event.last_error == "unsafe_url"
    assert event.delivered_at is None
    assert receiver.requests == []  # no connection reached the loopback receiver


async def test_a_secret_in_the_webhook_url_never_reaches_a_log_line(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    receiver: Receiver, emit_erased: Emit,
) -> None:
    secret_path, secret_query = "T0KEN-in-path-5f1c", "sig=qu3ry-s3cret"
    url = f"{receiver.url.rstrip('/')}/{secret_path}?{secret_query}"
    await _setup(region_router, custody, app_id, url)
    await emit_erased("eu")
    with json_log_lines(logging.DEBUG) as lines:
        async with egress_client(DEV) as http:
            await deliver_due(region_router, http, custody, policy=DEV, owner="w1")
    assert receiver.requests  # the delivery happened, at the full URL
    logged = json.dumps(lines())
    assert "HTTP Request: POST http://127.0.0.1:" in logged  # the origin is still logged
    assert secret_path not in logged
    assert "qu3ry-s3cret" not in logged


async def test_a_clear_url_of_an_earlier_release_is_sealed_by_the_migration_step(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
) -> None:
    legacy = "https://hooks.example.com/T0/B1/s3cr3t?token=abc"
    async with region_router.session("eu") as session, session.begin():
        app = await session.get(Application, app_id)
        assert app is not None
        app.webhook_url = legacy
    assert await seal_clear_urls(region_router, custody["eu"]) == 1
    assert await seal_clear_urls(region_router, custody["eu"]) == 0
    async with region_router.reader("eu") as session:
        app = await session.get(Application, app_id)
        assert app is not None
        assert app.webhook_url is None
        assert app.webhook_url_sealed is not None
        assert b"s3cr3t" not in bytes(app.webhook_url_sealed)
        assert url_of(custody["eu"].hasher, app) == legacy


async def test_an_event_without_an_endpoint_says_no_endpoint_not_failed(
    region_router: RegionRouter, custody: dict[str, RegionCustody], emit_erased: Emit,
) -> None:
    from aggregator.http.routes.events import event_view

    event_id = await emit_erased("eu")
    async with egress_client(DEV) as http:
        await deliver_due(region_router, http, custody, policy=DEV, owner="w1")
    event = await _event(region_router, event_id)
    assert event.delivered_at is None
    assert event.next_attempt_at is None
    assert event_view(event).delivery == "no_endpoint"
