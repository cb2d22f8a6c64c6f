"""Rate limits as callers meet them: 429 problems and fields, per application, per region,
per client address on the Link pages, shared by two gateways over real sockets.

Every test runs on SQLite and PostgreSQL (the ``services`` fixture's stores); the Redis
variants talk to the real server at 127.0.0.1:6379 under a key prefix of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_network

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from starlette.applications import Starlette

from aggregator.applications import create_application
from aggregator.custody import RegionCustody
from aggregator.http import Services
from aggregator.http.app import create_app, open_services
from aggregator.http.ratelimit import STORE_KEY
from aggregator.http.ratelimit.redis_store import RedisBuckets
from aggregator.http.serving import bind, serving
from aggregator.ids import ApplicationId, new_id, new_secret
from aggregator.link.wiring import install
from aggregator.models import ApiKey, RateLimitBucket
from aggregator.settings import (
    DEFAULT_RATE_LIMITS,
    IPNetwork,
    RateLimit,
    RateLimitSettings,
    Settings,
)
from aggregator.store import RegionRouter
from tests.aggregator._logs import LogLines
from tests.aggregator.http._helpers import assert_problem
from tests.aggregator.http._ratelimit import REDIS_URL, redis_limits
from tests.aggregator.http.conftest import GATEWAY
from tests.aggregator.http.test_ratelimit_stores import socket_closed

__all__ = ["redis_limits"]  # the fixture, imported for pytest

SLOW = 0.01  # tokens per second: nothing refills during a test


def limited(settings: Settings, base: RateLimitSettings | None = None,
            **classes: RateLimit) -> Settings:
    limits = base or settings.rate_limits
    return replace(settings, rate_limits=replace(
        limits, classes={**DEFAULT_RATE_LIMITS, **classes}))


def client(app: Starlette, key: str | None = None, *, ip: str = "127.0.0.1",
           headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 40000)),
        base_url=GATEWAY, headers={**auth, **(headers or {})},
    )


def missing_user(region: str = "eu") -> str:
    return f"/v1/users/{new_id('usr', region)}"  # authenticated, charged, then 404


async def test_an_application_over_its_read_budget_gets_a_429_problem_with_the_fields(
    settings: Settings, services: Services, api_key: str, region_router: RegionRouter,
) -> None:
    app = create_app(limited(settings, read=RateLimit(3, SLOW)), services=services)
    _, other_key = await create_application(region_router, "Other app", [])
    async with client(app, api_key) as api, client(app, other_key) as other:
        answers = [await api.get(missing_user()) for _ in range(3)]
        assert [a.status_code for a in answers] == [404, 404, 404]
        assert [a.headers["ratelimit"].split(";")[1] for a in answers] == ["r=2", "r=1", "r=0"]
        assert answers[0].headers["ratelimit-policy"] == '"read";q=3;w=300'

        refused = await api.get(missing_user())
        body = assert_problem(refused, 429, "rate_limited")
        assert body["violated-policies"] == ["read"]
        assert refused.headers["retry-after"] == "100"  # one token at 0.01 per second
        assert refused.headers["ratelimit"] == '"read";r=0;t=100'
        assert refused.headers["ratelimit-policy"] == '"read";q=3;w=300'

        # Writes have their own bucket, and so does every other application.
        created = await api.post("/v1/users", json={"external_id": "w", "region": "eu"})
        assert created.status_code == 201
        assert created.headers["ratelimit"].startswith('"write";r=')
        assert (await other.get(missing_user())).status_code == 404


async def test_budgets_are_kept_per_region_and_per_application_override(
    settings: Settings, services: Services, api_key: str, app_id: ApplicationId,
    region_router: RegionRouter,
) -> None:
    _, other_key = await create_application(region_router, "Big customer", [])
    async with region_router.reader("eu") as session:
        other_app = (await session.execute(
            select(ApiKey.application_id).where(ApiKey.prefix == other_key.split("_")[1])
        )).scalar_one()
    base = replace(settings.rate_limits,
                   applications={other_app: {"read": RateLimit(5, SLOW)}})
    app = create_app(limited(settings, base, read=RateLimit(1, SLOW)), services=services)
    async with client(app, api_key) as api, client(app, other_key) as other:
        assert (await api.get(missing_user("eu"))).status_code == 404
        assert_problem(await api.get(missing_user("eu")), 429, "rate_limited")
        # The us region's database holds the us budget: an eu burst leaves it untouched.
        assert (await api.get(missing_user("us"))).status_code == 404
        statuses = [(await other.get(missing_user())).status_code for _ in range(6)]
        assert statuses == [404] * 5 + [429]
    buckets = {}
    for region in ("eu", "us"):
        async with region_router.reader(region) as session:
            buckets[region] = set(
                (await session.execute(select(RateLimitBucket.bucket))).scalars())
    assert buckets == {"eu": {f"read:{app_id}", f"read:{other_app}"}, "us": {f"read:{app_id}"}}


@pytest.fixture
def link_services(services: Services) -> Services:
    install(services, public_url=GATEWAY)  # not loopback: link URLs need public_url
    return services


async def _link_url(api: httpx.AsyncClient, external_id: str = "l") -> str:
    user = (await api.post("/v1/users", json={"external_id": external_id,
                                              "region": "eu"})).json()
    answer = await api.post("/v1/link/sessions", json={
        "user_id": user["id"], "redirect_uri": "https://app.test/cb"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["link_url"]).removeprefix(GATEWAY)


async def test_the_link_page_and_callback_are_limited_per_client_address(
    settings: Settings, link_services: Services, api_key: str, region_router: RegionRouter,
) -> None:
    app = create_app(limited(settings, link=RateLimit(2, SLOW)), services=link_services)
    async with client(app, api_key) as api, client(app, ip="203.0.113.7") as person, \
            client(app, ip="198.51.100.9") as neighbour:
        page = await _link_url(api)
        first = await person.get(page)
        assert first.status_code == 200
        assert first.headers["ratelimit"] == '"link";r=1;t=100'
        assert (await person.get(page)).status_code == 200
        refused = await person.get(page)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("text/html")  # a person reads it
        assert refused.headers["retry-after"] == "100"
        assert refused.headers["x-frame-options"] == "DENY"
        assert refused.headers["x-request-id"] in refused.text
        # The OAuth callback shares the address's bucket; another address is untouched.
        callback = await person.get("/link/callback", params={"state": new_secret("sta", "eu")})
        assert callback.status_code == 429
        # (its own link: a link opened in one browser is refused in any other)
        assert (await neighbour.get(await _link_url(api, "n"))).status_code == 200
    async with region_router.reader("eu") as session:
        rows = (await session.execute(select(RateLimitBucket.bucket))).scalars().all()
    link_rows = [r for r in rows if r.startswith("link:")]
    assert len(link_rows) == 2  # one per address, in the session's region
    assert not any("203.0.113" in r or "198.51.100" in r for r in rows)  # HMACs only
    async with region_router.reader("us") as session:
        assert not (await session.execute(select(RateLimitBucket.bucket))).scalars().all()


async def test_a_spoofed_forwarded_for_is_ignored_without_trusted_proxies(
    settings: Settings, link_services: Services,
) -> None:
    page = f"/link/{new_secret('lnk', 'eu')}"  # unknown token: a 404 page, still charged
    plain = create_app(limited(settings, link=RateLimit(2, SLOW)), services=link_services)
    statuses = []
    for n in range(3):
        async with client(plain, headers={"X-Forwarded-For": f"192.0.2.{n}"}) as spoofer:
            statuses.append((await spoofer.get(page)).status_code)
    assert statuses == [404, 404, 429]

    proxied = replace(settings.rate_limits, trusted_proxies=(_net("127.0.0.0/8"),))
    behind = create_app(limited(settings, proxied, link=RateLimit(2, SLOW)),
                        services=link_services)
    for n in range(3):  # through a trusted proxy each real client has its own bucket
        async with client(behind, headers={"X-Forwarded-For": f"192.0.2.{n}"}) as forwarded:
            assert (await forwarded.get(page)).status_code == 404


def _net(text: str) -> IPNetwork:
    return ip_network(text)


async def _statuses_through_two_gateways(
    apps: Sequence[Starlette], key: str, requests: int
) -> list[int]:
    statuses = []
    async with serving(apps[0], bind("127.0.0.1", 0)) as first, \
            serving(apps[1], bind("127.0.0.1", 0)) as second:
        clients = [httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"})
                   for url in (first, second)]
        try:
            for n in range(requests):
                statuses.append((await clients[n % 2].get(missing_user())).status_code)
        finally:
            for c in clients:
                await c.aclose()
    return statuses


async def test_two_gateways_over_real_sockets_share_one_budget(
    settings: Settings, services: Services, api_key: str,
) -> None:
    capped = limited(settings, read=RateLimit(4, SLOW))
    second_router = RegionRouter(settings)  # the second gateway's own connection pool
    second = Services(settings, second_router, services.custody, services.banks)
    try:
        apps = [create_app(capped, services=services), create_app(capped, services=second)]
        statuses = await _statuses_through_two_gateways(apps, api_key, 8)
    finally:
        await second_router.dispose()
    assert statuses == [404] * 4 + [429] * 4


@pytest.mark.redis
async def test_two_gateways_on_redis_share_one_budget(
    settings: Settings, services: Services, api_key: str, redis_limits: RateLimitSettings,
) -> None:
    capped = limited(settings, redis_limits, read=RateLimit(4, SLOW))
    second = Services(settings, services.router, services.custody, services.banks)
    stores = [RedisBuckets.from_settings(redis_limits) for _ in range(2)]
    services.extra[STORE_KEY], second.extra[STORE_KEY] = stores
    try:
        apps = [create_app(capped, services=services), create_app(capped, services=second)]
        statuses = await _statuses_through_two_gateways(apps, api_key, 8)
    finally:
        for store in stores:
            await store.close()
    assert statuses == [404] * 4 + [429] * 4


async def test_an_unreachable_store_lets_requests_through_and_says_so(
    settings: Settings, services: Services, api_key: str, log_lines: LogLines,
) -> None:
    with socket_closed() as port:
        down = RateLimitSettings(backend="redis", redis_url=f"redis://127.0.0.1:{port}/0")
        services.extra[STORE_KEY] = RedisBuckets.from_settings(down)
        app = create_app(limited(settings, down, read=RateLimit(1, SLOW)), services=services)
        async with client(app, api_key) as api:
            answers = [await api.get(missing_user()) for _ in range(3)]
            metrics = (await api.get("/metrics")).text
        await services.extra[STORE_KEY].close()  # type: ignore[attr-defined]
    assert [a.status_code for a in answers] == [404] * 3
    assert all("ratelimit" not in a.headers for a in answers)
    assert 'aggregator_rate_limit_decisions_total{outcome="store_error",route_class="read"} 3.0' \
        in metrics
    assert any("rate limit store unavailable" in line["message"] for line in log_lines())


async def test_disabled_limits_and_unlimited_routes_carry_no_fields(
    settings: Settings, link_services: Services, api_key: str,
) -> None:
    off = replace(settings, rate_limits=replace(settings.rate_limits, enabled=False))
    on = limited(settings, read=RateLimit(1, SLOW), link=RateLimit(1, SLOW))
    async with client(create_app(off, services=link_services), api_key) as api:
        for _ in range(3):
            assert "ratelimit" not in (await api.get(missing_user())).headers
    async with client(create_app(on, services=link_services), api_key) as api:
        for path in ("/healthz", "/openapi.json", "/link/static/link.css") * 2:
            answer = await api.get(path)
            assert answer.status_code == 200
            assert "ratelimit" not in answer.headers
        # Plaid's receiver is never limited: signatures, not budgets, keep it honest.
        for _ in range(3):
            assert (await api.post("/webhooks/plaid/eu", content=b"{}")).status_code != 429


async def test_openapi_documents_the_429_and_its_fields(
    settings: Settings, services: Services,
) -> None:
    async with client(create_app(settings, services=services)) as anonymous:
        doc = (await anonymous.get("/openapi.json")).json()
    operation = doc["paths"]["/v1/users/{id}"]["get"]
    limited_answer = operation["responses"]["429"]
    assert set(limited_answer["headers"]) >= {"RateLimit", "RateLimit-Policy", "Retry-After"}
    assert "RateLimit" in operation["responses"]["200"]["headers"]
    assert "429" not in doc["paths"]["/healthz"]["get"]["responses"]


async def test_an_address_flooding_bad_keys_is_refused_before_any_lookup(
    settings: Settings, services: Services, api_key: str, region_router: RegionRouter,
) -> None:
    capped = limited(settings, unauthenticated=RateLimit(2, SLOW))
    first, second = create_app(capped, services=services), create_app(capped, services=services)
    bad = "agk_aaaaaaaa_" + "x" * 43
    async with client(first, bad, ip="203.0.113.50") as guesser, \
            client(second, bad, ip="203.0.113.50") as same_address_elsewhere, \
            client(first, api_key, ip="198.51.100.1") as good:
        statuses = [(await guesser.get(missing_user())).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]  # the third empties the address's bucket
        refused = await guesser.get(missing_user())
        body = assert_problem(refused, 429, "rate_limited")
        assert body["violated-policies"] == ["unauthenticated"]
        assert 1 <= int(refused.headers["retry-after"]) <= 100
        assert refused.headers["ratelimit-policy"] == '"unauthenticated";q=2;w=200'
        # Another gateway process shares the bucket: one more failure and it refuses too.
        assert (await same_address_elsewhere.get(missing_user())).status_code == 401
        assert (await same_address_elsewhere.get(missing_user())).status_code == 429
        # Failures are charged to the address alone; good callers pay nothing for them.
        assert (await good.get(missing_user())).status_code == 404
    async with region_router.reader("eu") as session:
        rows = (await session.execute(select(RateLimitBucket.bucket))).scalars().all()
    assert sum(r.startswith("unauthenticated:ip:") for r in rows) == 1


@pytest.mark.redis
@pytest.mark.filterwarnings("ignore::aggregator.keyring.LocalKeyringInProductionWarning")
async def test_the_redis_store_the_limiter_built_is_closed_with_the_services(
    settings: Settings, custody: dict[str, RegionCustody], api_key: str,
    redis_limits: RateLimitSettings,
) -> None:
    on_redis = limited(settings, redis_limits, read=RateLimit(4, SLOW))
    async with open_services(on_redis) as services:
        async with client(create_app(on_redis, services=services), api_key) as api:
            assert (await api.get(missing_user())).status_code == 404
        store = services.extra[STORE_KEY]
        assert isinstance(store, RedisBuckets)  # built by the limiter on first use
        connection_id = await store.client.client_id()
        assert connection_id in await _redis_client_ids()
    # The server sees the pool's connection go (bounded wait: it notices asynchronously).
    for _ in range(40):
        if connection_id not in await _redis_client_ids():
            break
        await asyncio.sleep(0.05)
    assert connection_id not in await _redis_client_ids()


async def _redis_client_ids() -> set[int]:
    observer = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        return {int(c["id"]) for c in await observer.client_list()}
    finally:
        await observer.aclose()
