"""``POST /webhooks/plaid/{region}``: verified first, stored once, attacks store nothing.

Plaid's keys come from the loopback Plaid (tests/connectors/plaid/fake_plaid.py) through
the real plaid-python client; the gateway app is reached in-process.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, update

from aggregator.errors import ConfigError
from aggregator.http import Services
from aggregator.http.logs import JsonFormatter
from aggregator.http.serving import bind, serving
from aggregator.models import Connection, PlaidWebhookEvent, WebhookStatus
from aggregator.plaid import PlaidWebhooks, apply_webhook_event, pending_events
from aggregator.plaid.needs import SERVICE_KEY
from aggregator.plaid.wiring import install_plaid_webhooks
from aggregator.settings import PlaidRegion
from aggregator.store import RegionRouter
from connectors import (
    PlaidConfig,
    PlaidConnector,
    PlaidEnvironment,
    SyncPolicy,
    WebhookKeys,
    WebhookVerifier,
)
from tests.aggregator._factories import LinkFactory
from tests.aggregator.http.conftest import ClientFactory
from tests.connectors.plaid.fake_plaid import CLIENT_ID, SECRET, FakePlaid, b64url, jws, new_key
from vault import Secret

ITEM = "item-us-1"


class Plaid:
    """Two loopback Plaid environments; the gateway's regions trust only ``sandbox``."""

    def __init__(self, sandbox: FakePlaid, production: FakePlaid) -> None:
        self.sandbox = sandbox
        self.production = production
        self.key = sandbox.add_key()
        self.registry = CollectorRegistry()

    def body(self, code: str = "SYNC_UPDATES_AVAILABLE", kind: str = "TRANSACTIONS",
             item: str = ITEM, **extra: Any) -> bytes:
        return json.dumps({"webhook_type": kind, "webhook_code": code, "item_id": item,
                           "environment": "sandbox", **extra}).encode()

    def count(self, outcome: str, region: str = "us") -> float:
        value = self.registry.get_sample_value(
            "aggregator_plaid_webhooks_total", {"region": region, "outcome": outcome})
        return value or 0.0


@pytest.fixture
async def plaid(services: Services, region_router: RegionRouter) -> AsyncIterator[Plaid]:
    sandbox, production = FakePlaid(), FakePlaid()
    async with serving(sandbox.app(), bind("127.0.0.1", 0)) as url:
        state = Plaid(sandbox, production)
        verifiers = {}
        for region in region_router.regions:
            connector = PlaidConnector(PlaidConfig(
                region, CLIENT_ID, Secret(SECRET), PlaidEnvironment.SANDBOX, host=url))
            verifiers[region] = WebhookVerifier(WebhookKeys(connector.webhook_key))
        services.extra[SERVICE_KEY] = PlaidWebhooks(region_router, verifiers, state.registry)
        yield state


@pytest.fixture
async def item_connection(make_linked: LinkFactory, region_router: RegionRouter) -> Connection:
    linked = await make_linked("us")
    async with region_router.session("us") as session, session.begin():
        await session.execute(update(Connection).where(Connection.id == linked.connection.id)
                              .values(external_ref=ITEM))
    return linked.connection


async def rows(router: RegionRouter, region: str = "us") -> int:
    async with router.reader(region) as session:
        return int((await session.execute(
            select(func.count()).select_from(PlaidWebhookEvent))).scalar_one())


async def post(client: httpx.AsyncClient, body: bytes, header: str | None,
               region: str = "us") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Plaid-Verification"] = header
    return await client.post(f"/webhooks/plaid/{region}", content=body, headers=headers)


async def test_verified_webhook_is_stored_as_a_pending_job(
    plaid: Plaid, client_factory: ClientFactory, region_router: RegionRouter,
    item_connection: Connection,
) -> None:
    body = plaid.body()
    response = await post(client_factory(), body, plaid.sandbox.sign(body, plaid.key))
    assert response.status_code == 200
    assert response.json() == {"status": "stored"}
    async with region_router.reader("us") as session:
        event = (await session.execute(select(PlaidWebhookEvent))).scalar_one()
    assert event.status is WebhookStatus.PENDING
    assert event.connection_id == item_connection.id
    assert event.body_sha256 == hashlib.sha256(body).digest()
    assert plaid.count("stored") == 1


async def test_duplicate_delivery_is_stored_and_applied_once(
    plaid: Plaid, client_factory: ClientFactory, region_router: RegionRouter,
    item_connection: Connection,
) -> None:
    body = plaid.body("ERROR", "ITEM", error={"error_code": "ITEM_LOGIN_REQUIRED"})
    client = client_factory()
    first = await post(client, body, plaid.sandbox.sign(body, plaid.key))
    retry = await post(client, body, plaid.sandbox.sign(body, plaid.key, iat=int(time.time())))
    assert (first.json(), retry.json()) == ({"status": "stored"}, {"status": "duplicate"})
    assert await rows(region_router) == 1
    outcomes = []
    for _ in range(2):  # two workers racing, one after the other
        async with region_router.session("us") as session, session.begin():
            for key in await pending_events(session):
                outcomes.append(await apply_webhook_event(session, key))
    assert outcomes == ["reauth_required"]


async def test_unknown_item_is_acknowledged_as_orphaned(
    plaid: Plaid, client_factory: ClientFactory, region_router: RegionRouter,
    make_linked: LinkFactory,
) -> None:
    # The item belongs to an eu connection; the webhook arrives on the us path.
    linked = await make_linked("eu")
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(Connection).where(Connection.id == linked.connection.id)
                              .values(external_ref="item-eu-9"))
    body = plaid.body(item="item-eu-9")
    response = await post(client_factory(), body, plaid.sandbox.sign(body, plaid.key))
    assert response.json() == {"status": "orphaned"}
    async with region_router.reader("us") as session:
        event = (await session.execute(select(PlaidWebhookEvent))).scalar_one()
    assert (event.status, event.connection_id) == (WebhookStatus.ORPHANED, None)
    assert await rows(region_router, "eu") == 0


def _hs256_with_public_key(plaid: Plaid, body: bytes) -> str:
    pem = plaid.key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iat": int(time.time()), "request_body_sha256": hashlib.sha256(body).hexdigest()}
    return jws({"alg": "HS256", "kid": plaid.key.kid, "typ": "JWT"}, claims,
               lambda data: hmac.new(pem, data, hashlib.sha256).digest())


def _alg_none(plaid: Plaid, body: bytes) -> str:
    claims = {"iat": int(time.time()), "request_body_sha256": hashlib.sha256(body).hexdigest()}
    return jws({"alg": "none", "kid": plaid.key.kid}, claims, lambda _data: b"")


def _expired_key(plaid: Plaid, body: bytes) -> str:
    key = plaid.sandbox.add_key()
    key.expired_at = int(time.time()) - 60
    return plaid.sandbox.sign(body, key)


def _other_environment(plaid: Plaid, body: bytes) -> str:
    return plaid.production.sign(body, plaid.production.add_key())


Attack = Callable[[Plaid, bytes], tuple[bytes, str | None]]
ATTACKS: dict[str, tuple[Attack, int, str]] = {
    "body_changed_after_signing": (
        lambda p, b: (b.replace(b"SYNC", b"SYNd"), p.sandbox.sign(b, p.key)), 400,
        "body_mismatch"),
    "iat_older_than_5_minutes": (
        lambda p, b: (b, p.sandbox.sign(b, p.key, iat=int(time.time()) - 301)), 400, "stale"),
    "iat_in_the_future": (
        lambda p, b: (b, p.sandbox.sign(b, p.key, iat=int(time.time()) + 600)), 400,
        "from_future"),
    "alg_none": (lambda p, b: (b, _alg_none(p, b)), 400, "bad_algorithm"),
    "hs256_with_public_key_as_secret": (
        lambda p, b: (b, _hs256_with_public_key(p, b)), 400, "bad_algorithm"),
    "unknown_kid": (lambda p, b: (b, p.sandbox.sign(b, new_key())), 400, "unknown_kid"),
    "expired_key": (lambda p, b: (b, _expired_key(p, b)), 400, "key_expired"),
    "missing_header": (lambda p, b: (b, None), 400, "missing_header"),
    "malformed_header": (lambda p, b: (b, "not.a-jws"), 400, "malformed_header"),
    "garbage_segments": (lambda p, b: (b, "e30.e30.!!"), 400, "malformed_header"),
    "signature_from_other_key_same_kid": (
        lambda p, b: (b, p.sandbox.sign(b, new_key(p.key.kid))), 400, "bad_signature"),
    "oversized_body": (
        lambda p, b: (b + b" " * 20_000, p.sandbox.sign(b + b" " * 20_000, p.key)), 413,
        "body_too_large"),
    "key_of_another_environment": (lambda p, b: (b, _other_environment(p, b)), 400,
                                   "unknown_kid"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_attack_is_rejected_and_nothing_is_stored(
    attack: str, plaid: Plaid, client_factory: ClientFactory, region_router: RegionRouter,
    item_connection: Connection, caplog: pytest.LogCaptureFixture,
) -> None:
    make, status, reason = ATTACKS[attack]
    body, header = make(plaid, plaid.body())
    response = await post(client_factory(), body, header)
    assert response.status_code == status
    assert "body" not in response.text.lower() or status == 413
    assert await rows(region_router) == 0
    assert plaid.count(reason) == 1
    logged = [r for r in caplog.records if r.name == "aggregator.plaid.webhooks"]
    assert [getattr(r, "fields", {}) for r in logged] == [{"region": "us", "reason": reason}]
    line = JsonFormatter().format(logged[0])
    assert json.loads(line)["reason"] == reason
    assert json.loads(line)["region"] == "us"
    for secret in (ITEM, header or "\0", body.decode("latin-1")):
        assert secret not in line
    assert all(ITEM not in r.getMessage() for r in caplog.records)


async def test_forged_kids_cannot_make_us_hammer_plaid(
    plaid: Plaid, client_factory: ClientFactory, region_router: RegionRouter,
) -> None:
    client = client_factory()
    body = plaid.body()
    genuine = await post(client, body, plaid.sandbox.sign(body, plaid.key))  # caches the kid
    assert genuine.status_code == 200
    answers = [await post(client, body, plaid.sandbox.sign(body, new_key())) for _ in range(20)]
    # The rest of the burst of 3 went to two kids (unknown: 400); the others wait for a
    # fetch token: 503 + Retry-After, since one of them could have been Plaid's new key.
    assert [a.status_code for a in answers] == [400] * 2 + [503] * 18
    assert all(a.headers["retry-after"] == "10" for a in answers[2:])
    assert all(a.headers["content-type"] == "application/problem+json" for a in answers)
    assert plaid.sandbox.key_requests == 3  # the genuine kid, then the rest of the burst
    assert plaid.count("kid_rate_limited") == 18
    # A known key keeps working during the flood: it is served from the cache.
    other = plaid.body(code="DEFAULT_UPDATE")
    assert (await post(client, other, plaid.sandbox.sign(other, plaid.key))).status_code == 200
    assert await rows(region_router) == 2


def test_b64url_helper_is_unpadded() -> None:
    assert b64url(b"\xff") == base64.urlsafe_b64encode(b"\xff").decode().rstrip("=")


async def test_unknown_region_is_404_and_stores_nothing(
    plaid: Plaid, client_factory: ClientFactory, region_router: RegionRouter,
) -> None:
    body = plaid.body()
    response = await post(client_factory(), body, plaid.sandbox.sign(body, plaid.key), "zz")
    assert response.status_code == 404
    assert await rows(region_router) == 0


def test_receiver_is_built_per_plaid_region_from_the_settings(services: Services) -> None:
    config = PlaidConfig("us", "cid", Secret("hush"), PlaidEnvironment.SANDBOX)
    regions = dict(services.settings.regions)
    regions["us"] = dataclasses.replace(regions["us"], plaid=PlaidRegion(config, SyncPolicy()))
    services.settings = dataclasses.replace(services.settings, regions=regions)
    receiver = install_plaid_webhooks(services, CollectorRegistry())
    assert receiver is not None
    assert set(receiver.verifiers) == {"us"}
    assert services.extra[SERVICE_KEY] is receiver


@pytest.mark.parametrize("host", [
    "http://169.254.169.254", "https://10.1.2.3", "http://127.0.0.1:9", "https://2130706433",
])
def test_a_plaid_host_the_egress_policy_refuses_stops_start_up(
    services: Services, host: str,
) -> None:
    config = PlaidConfig("us", "cid", Secret("hush"), PlaidEnvironment.SANDBOX, host=host)
    regions = dict(services.settings.regions)
    regions["us"] = dataclasses.replace(regions["us"], plaid=PlaidRegion(config, SyncPolicy()))
    services.settings = dataclasses.replace(services.settings, regions=regions)
    with pytest.raises(ConfigError, match=r"regions\.us\.plaid\.host: "):
        install_plaid_webhooks(services, CollectorRegistry())


async def test_concurrent_deliveries_share_commits_and_still_dedupe(
    plaid: Plaid, client_factory: ClientFactory, region_router: RegionRouter,
    item_connection: Connection,
) -> None:
    client = client_factory()
    bodies = [plaid.body(code=f"CODE_{i}", kind="ITEM") for i in range(6)] * 2
    responses = await asyncio.gather(*(
        post(client, body, plaid.sandbox.sign(body, plaid.key)) for body in bodies))
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["duplicate"] * 6 + ["stored"] * 6
    assert await rows(region_router) == 6


async def test_accepted_and_rejected_counts_are_on_metrics(
    plaid: Plaid, client_factory: ClientFactory, item_connection: Connection,
) -> None:
    client = client_factory()
    body = plaid.body()
    assert (await post(client, body, plaid.sandbox.sign(body, plaid.key))).status_code == 200
    assert (await post(client, body, plaid.sandbox.sign(body, plaid.key))).status_code == 200
    other = plaid.body(code="DEFAULT_UPDATE")
    assert (await post(client, other, plaid.sandbox.sign(body, plaid.key))).status_code == 400
    exposition = (await client.get("/metrics")).text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in exposition.splitlines() if line.startswith("aggregator_plaid_")}
    assert samples['aggregator_plaid_webhooks_total{outcome="stored",region="us"}'] == 1.0
    assert samples['aggregator_plaid_webhooks_total{outcome="duplicate",region="us"}'] == 1.0
    assert samples['aggregator_plaid_webhooks_total{outcome="body_mismatch",region="us"}'] == 1.0


HOSTILE: dict[str, Callable[[Plaid, bytes], tuple[bytes, str]]] = {
    "header-nested-1000": lambda p, b: (b, "{}.{}.{}".format(
        b64url(b'{"alg":"ES256","kid":"k","x":' + b"[" * 1000 + b"]" * 1000 + b"}"),
        b64url(b"{}"), b64url(b"\0" * 64))),
    "body-nested-5000": lambda p, b: _signed(p, b'{"webhook_type":"ITEM","x":'
                                             + b"[" * 5000 + b"]" * 5000 + b"}"),
    "lone-surrogate-item": lambda p, b: _signed(
        p, b'{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"\\udfff"}'),
    "nan": lambda p, b: _signed(p, b'{"webhook_type":"ITEM","webhook_code":"X","n":NaN}'),
    "duplicate-keys": lambda p, b: _signed(
        p, b'{"webhook_type":"ITEM","webhook_code":"X","webhook_code":"Y"}'),
}


def _signed(plaid: Plaid, body: bytes) -> tuple[bytes, str]:
    return body, plaid.sandbox.sign(body, plaid.key)


@pytest.mark.parametrize("attack", list(HOSTILE))
async def test_hostile_json_is_a_400_problem_never_a_500(
    attack: str, plaid: Plaid, client_factory: ClientFactory, region_router: RegionRouter,
) -> None:
    body, header = HOSTILE[attack](plaid, b"")
    response = await post(client_factory(), body, header)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 400
    assert "request_id" in response.json() or "x-request-id" in response.headers
    assert await rows(region_router) == 0


async def test_a_key_rotation_under_a_forged_kid_flood_answers_503_then_accepts(
    services: Services, region_router: RegionRouter, client_factory: ClientFactory,
    item_connection: Connection,
) -> None:
    """End to end, through plaid-python and the loopback Plaid: after a rotation, while
    forged kids drain the fetch budget, the genuine webhook is told to retry (503 +
    Retry-After), then accepted at a retry within the documented bound; the retired key
    stops verifying once its re-check is due."""
    now = [float(int(time.time()))]
    sandbox = FakePlaid()
    old = sandbox.add_key()
    async with serving(sandbox.app(), bind("127.0.0.1", 0)) as url:
        connector = PlaidConnector(PlaidConfig(
            "us", CLIENT_ID, Secret(SECRET), PlaidEnvironment.SANDBOX, host=url))
        keys = WebhookKeys(connector.webhook_key, clock=lambda: now[0])
        services.extra[SERVICE_KEY] = PlaidWebhooks(
            region_router, {"us": WebhookVerifier(keys, clock=lambda: now[0])})
        client = client_factory()

        async def deliver(body: bytes, key: Any) -> httpx.Response:
            return await post(client, body, sandbox.sign(body, key, iat=int(now[0])))

        assert (await deliver(b'{"webhook_type":"ITEM","webhook_code":"A","item_id":"'
                              + ITEM.encode() + b'"}', old)).status_code == 200
        new = sandbox.add_key()
        old.expired_at = int(now[0])  # Plaid rotates
        statuses = []
        for second in range(40):
            now[0] += 1
            for i in range(5):  # 5 forged kids a second
                forged = await deliver(b"{}", new_key(f"forged-{second}-{i}"))
                assert forged.status_code in (400, 503)
            if second % 5 == 0:  # a genuine (re)delivery every 5 s
                body = b'{"webhook_type":"ITEM","webhook_code":"B","item_id":"' \
                    + ITEM.encode() + b'"}'
                answer = await deliver(body, new)
                statuses.append(answer.status_code)
                if answer.status_code == 503:
                    assert int(answer.headers["retry-after"]) >= 1
                if answer.status_code == 200:
                    break
        assert statuses[-1] == 200
        assert set(statuses[:-1]) <= {503}
        assert len(statuses) <= 3  # accepted within 10 s of the second sighting
        now[0] += 300  # the retired key's re-check is due: refused from now on
        late = await deliver(b'{"webhook_type":"ITEM","webhook_code":"C"}', old)
        assert late.status_code == 400
        assert sandbox.key_requests <= 1 + 2 + 40 // 10 + 2
