"""Who the client is: the gateway's own forwarding-header parser is the only one believed.

Over real loopback sockets under uvicorn, as `aggregator serve` runs the gateway: a client
behind no trusted proxy cannot pick its address (rate limit buckets, audit trail) or its
request id; behind a trusted proxy both come from the proxy.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_network

import httpx
from sqlalchemy import select

from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.serving import bind, serving
from aggregator.ids import new_secret
from aggregator.models import AuditEvent
from aggregator.settings import RateLimit, Settings
from aggregator.store import RegionRouter
from tests.aggregator.http.test_ratelimit_api import SLOW, client, limited, missing_user

FORGED = "203.0.113.77"
UUID = "8f6f1a2e-3c4b-4d5e-8f70-112233445566"


async def test_forged_forwarded_for_gets_no_fresh_bucket_over_a_real_socket(
    settings: Settings, services: Services,
) -> None:
    capped = limited(settings, unauthenticated=RateLimit(3, SLOW))
    bad = "agk_aaaaaaaa_" + "x" * 43
    statuses = []
    async with serving(create_app(capped, services=services), bind("127.0.0.1", 0)) as url, \
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {bad}"}) as c:
        for n in range(8):  # a new made-up address on every request
            answer = await c.get(missing_user(), headers={"X-Forwarded-For": f"198.51.100.{n}"})
            statuses.append(answer.status_code)
    assert statuses[:4] == [401] * 4
    assert 429 in statuses[4:]


async def test_the_audit_trail_records_the_peer_not_a_forged_header(
    settings: Settings, services: Services, api_key: str, region_router: RegionRouter,
) -> None:
    app = create_app(settings, services=services)
    async with serving(app, bind("127.0.0.1", 0)) as url, httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {api_key}"}
    ) as c:
        created = await c.post("/v1/users", json={"external_id": "xff", "region": "eu"},
                               headers={"X-Forwarded-For": FORGED, "X-Request-Id": UUID})
        assert created.status_code == 201, created.text
        # A caller's own request id is not believed: it would name another request.
        assert created.headers["x-request-id"] != UUID
    async with region_router.reader("eu") as session:
        event = (await session.execute(
            select(AuditEvent).where(AuditEvent.action == "user.created"))).scalar_one()
    assert event.client_ip == "127.0.0.1"
    assert event.request_id == created.headers["x-request-id"]


async def test_behind_a_trusted_proxy_the_forwarded_address_and_request_id_count(
    settings: Settings, services: Services, api_key: str, region_router: RegionRouter,
) -> None:
    proxied = replace(settings, rate_limits=replace(
        settings.rate_limits, trusted_proxies=(ip_network("127.0.0.0/8"),)))
    async with serving(create_app(proxied, services=services), bind("127.0.0.1", 0)) as url, \
            httpx.AsyncClient(base_url=url,
                              headers={"Authorization": f"Bearer {api_key}"}) as c:
        created = await c.post("/v1/users", json={"external_id": "px", "region": "eu"},
                               headers={"X-Forwarded-For": f"192.0.2.1, {FORGED}",
                                        "X-Request-Id": UUID})
        assert created.status_code == 201, created.text
        assert created.headers["x-request-id"] == UUID
    async with region_router.reader("eu") as session:
        event = (await session.execute(
            select(AuditEvent).where(AuditEvent.action == "user.created"))).scalar_one()
    assert event.client_ip == FORGED  # the right-most untrusted hop, never the client's own
    assert event.request_id == UUID


async def test_made_up_link_tokens_of_every_region_share_one_bucket(
    settings: Settings, services: Services,
) -> None:
    app = create_app(limited(settings, link=RateLimit(3, SLOW)), services=services)
    statuses = []
    async with client(app, ip="203.0.113.9") as person:
        for n in range(6):
            region = ("eu", "us")[n % 2]
            answer = await person.get(f"/link/{new_secret('lnk', region)}")
            statuses.append(answer.status_code)
    assert statuses[3:] == [429] * 3, statuses
