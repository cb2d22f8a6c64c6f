"""/healthz, /readyz and /metrics over the real stores."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import httpx

from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.views import Health, Readiness
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from tests.aggregator.conftest import Backend
from tests.aggregator.http._helpers import assert_problem, parsed
from tests.aggregator.http.conftest import GATEWAY


async def test_healthz_and_readyz_answer_when_all_is_well(api: httpx.AsyncClient) -> None:
    assert parsed(Health, await api.get("/healthz")) == Health("ok")
    ready = parsed(Readiness, await api.get("/readyz"))
    assert ready.status == "ready"
    assert {r: (h.database, h.keys) for r, h in ready.regions.items()} == {
        "eu": ("ok", "ok"), "us": ("ok", "ok"),
    }


async def test_readyz_names_the_region_whose_database_is_gone(
    backend: Backend, settings: Settings, services: Services, tmp_path: Path
) -> None:
    # SQLite: an empty file where the region's database was (a bare SELECT 1 would pass);
    # PostgreSQL: a server that does not answer.
    gone = (f"sqlite+aiosqlite:///{tmp_path / 'gone.sqlite3'}" if backend.name == "sqlite"
            else "postgresql+psycopg://postgres@127.0.0.1:1/gone")
    broken = dataclasses.replace(settings, regions={
        **settings.regions, "us": dataclasses.replace(settings.regions["us"], database_url=gone)
    })
    router = RegionRouter(broken)
    try:
        app = create_app(broken, services=dataclasses.replace(services, router=router))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=GATEWAY) as client:
            problem = assert_problem(await client.get("/readyz"), 503, "not_ready")
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
    finally:
        await router.dispose()
    assert problem["detail"] == "region us: database unavailable, keys ok"
    assert problem["regions"]["eu"] == {"database": "ok", "keys": "ok"}


async def test_readyz_fails_when_a_key_provider_fails(
    api: httpx.AsyncClient, services: Services
) -> None:
    directory = services.custody["eu"].envelope.provider.status().details["directory"]
    os.chmod(directory, 0o755)  # the local keyring refuses a directory others can read
    try:
        problem = assert_problem(await api.get("/readyz"), 503, "not_ready")
    finally:
        os.chmod(directory, 0o700)
    assert problem["detail"] == "region eu: database ok, keys unavailable"


async def test_metrics_count_requests_by_route_template(api: httpx.AsyncClient) -> None:
    await api.get("/v1/users/usr_eu_nope")
    await api.get("/v1/users/usr_us_nope")
    await api.get("/no/such/path")
    await api.get("/healthz")
    metrics = await api.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'aggregator_http_requests_total{method="GET",route="/v1/users/{id}",status="404"} ' \
           '2.0' in text
    assert 'route="unmatched",status="404"} 1.0' in text
    assert 'aggregator_http_request_duration_seconds_count{method="GET",route="/healthz"} 1.0' \
        in text
    assert "usr_eu_nope" not in text  # ids never become labels
