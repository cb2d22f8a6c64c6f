"""The API against its own ``/openapi.json``: schemathesis, over a real socket, on both stores.

A gateway and the sandbox bank run under uvicorn on loopback sockets; a user is linked
through the real Link flow, so the API has a connection, accounts and transactions to
find. Then the schemathesis CLI, as an external client would run it, generates requests
from the published document (its examples, coverage and fuzzing phases, valid and
invalid data) with the application's API key, and checks every answer:

- ``not_a_server_error``: no 5xx;
- ``negative_data_rejection``: a request the document calls invalid is refused (4xx);
- ``status_code_conformance``, ``content_type_conformance``,
  ``response_schema_conformance``, ``response_headers_conformance``: each answer is one
  the document describes, with the media type and the schema it names;
- ``problem_details`` (``contract_checks.py``): every 4xx/5xx is an RFC 9457 problem
  with ``type``, ``title``, ``status`` and the request id (HTML with the request id for
  the person-facing Link pages, as documented).

Path parameters draw from dictionaries of real ids half of the time (so a ``GET``
finds data) and are generated the other half (so the 404 paths are exercised too).
The run is bounded (``MAX_EXAMPLES`` per operation and phase) and derandomized with a
fixed seed, so CI sees the same requests every time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aggregator.applications import create_application
from aggregator.custody import RegionCustody
from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.problems import PROBLEM_TYPES
from aggregator.http.serving import base_url, bind, serving
from aggregator.link.walk import link_as_person
from aggregator.link.wiring import install
from aggregator.plaid.needs import SERVICE_KEY
from aggregator.plaid.receiver import PlaidWebhooks
from aggregator.sandbox import SandboxBank, SandboxConfig
from aggregator.settings import (
    DEFAULT_RATE_LIMITS,
    RateLimit,
    RateLimitSettings,
    Settings,
)
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from connectors import WebhookKeys, WebhookVerifier, load_profiles
from tests.aggregator.e2e.conftest import APP_REDIRECT, BANK_FOR, gateway_client

ROOT = Path(__file__).resolve().parents[3]
MAX_EXAMPLES = 60
RUN_TIMEOUT = 240.0
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance,negative_data_rejection"
)


@dataclass(frozen=True)
class World:
    """Ids that exist in the running gateway, by what operations may use them for."""

    url: str
    api_key: str
    user_id: str
    connection_id: str
    account_id: str
    erased_user_id: str
    erasure_id: str
    revocable_connection_id: str
    event_id: str
    link_token: str


async def _no_plaid_key(kid: str) -> None:
    return None  # Plaid knows no such key: every webhook is refused, after real parsing


async def _link(api: httpx.AsyncClient, browser: httpx.AsyncClient, external_id: str
                ) -> tuple[str, str]:
    user = await api.post("/v1/users", json={"external_id": external_id, "region": "eu"})
    assert user.status_code == 201, user.text
    user_id = user.json()["id"]
    session = await api.post("/v1/link/sessions", json={
        "user_id": user_id, "redirect_uri": APP_REDIRECT})
    assert session.status_code == 201, session.text
    walk = await link_as_person(browser, session.json()["link_url"], username="alice",
                                password="alice-pass", stop_at=APP_REDIRECT)
    assert walk.landed_query["outcome"] == "success", walk.hops
    return user_id, walk.landed_query["connection_id"]


#: The rate limiter stays on (429 is part of the contract) with buckets wide enough that
#: the generated requests reach the logic behind each operation.
WIDE_LIMITS = RateLimitSettings(classes={c: RateLimit(100_000, 10_000.0)
                                         for c in DEFAULT_RATE_LIMITS})


@pytest.fixture
async def world(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> AsyncIterator[World]:
    settings = dataclasses.replace(settings, rate_limits=WIDE_LIMITS)
    bank = SandboxBank(SandboxConfig(clients=[gateway_client()]))
    async with bank.serve() as bank_url, httpx.AsyncClient(timeout=10) as http:
        profiles = load_profiles([], {b: {"issuer": bank_url} for b in BANK_FOR.values()})
        services = Services(settings, region_router, custody, BankDirectory(profiles, http))
        sock = bind("127.0.0.1", 0)
        install(services, public_url=base_url(sock))
        services.extra[SERVICE_KEY] = PlaidWebhooks(region_router, {
            "eu": WebhookVerifier(WebhookKeys(_no_plaid_key)),
        })
        app = create_app(settings, services=services)
        _, key = await create_application(region_router, "Budgetly", [APP_REDIRECT])
        async with (
            serving(app, sock) as url,
            httpx.AsyncClient(base_url=url, timeout=20,
                              headers={"Authorization": f"Bearer {key}"}) as api,
            httpx.AsyncClient(timeout=20) as browser,
        ):
            user_id, connection_id = await _link(api, browser, "kept")
            erased_user_id, _ = await _link(api, browser, "erased")
            _, revocable = await _link(api, browser, "revoked")
            accounts = (await api.get(f"/v1/connections/{connection_id}/accounts")).json()
            erasure = (await api.delete(f"/v1/users/{erased_user_id}")).json()
            events = (await api.get("/v1/events")).json()["data"]
            session = await api.post("/v1/link/sessions", json={
                "user_id": user_id, "redirect_uri": APP_REDIRECT})
            yield World(
                url, key, user_id, connection_id, accounts["data"][0]["id"],
                erased_user_id, erasure["id"], revocable, events[0]["id"],
                session.json()["link_token"],
            )


def _config(world: World) -> str:
    """schemathesis.toml: real ids per operation, bound at half the draws."""

    def ids(name: str, values: list[str]) -> str:
        return f"[dictionaries.{name}]\nvalues = {json.dumps(values)}\n"

    def bind(operation: str, parameter: str, dictionary: str) -> str:
        where = parameter if "." in parameter else f"path.{parameter}"
        return (f'[[operations]]\ninclude-operation-id = "{operation}"\n'
                f'parameters = {{ "{where}" = {{ dictionary = "{dictionary}", '
                f"probability = 0.5 }} }}\n")

    w = world
    parts = [
        ids("users", [w.user_id]), ids("erasable", [w.erased_user_id]),
        ids("connections", [w.connection_id]), ids("revocable", [w.revocable_connection_id]),
        ids("accounts", [w.account_id]), ids("erasures", [w.erasure_id]),
        ids("events", [w.event_id]), ids("links", [w.link_token]),
        ids("problems", sorted(PROBLEM_TYPES)), ids("regions", ["eu", "us"]),
        ids("redirects", [APP_REDIRECT]),
    ]
    for operation, parameter, dictionary in (
        ("get_user", "id", "users"), ("get_user_connections", "id", "users"),
        ("delete_user", "id", "erasable"), ("get_erasure_request", "id", "erasures"),
        ("get_connection", "id", "connections"), ("post_sync", "id", "connections"),
        ("get_accounts", "id", "connections"), ("get_transactions_sync", "id", "connections"),
        ("delete_connection", "id", "revocable"), ("get_transactions", "id", "accounts"),
        ("post_redeliver", "id", "events"), ("show_page", "token", "links"),
        ("choose_bank", "token", "links"), ("problem_type", "code", "problems"),
        ("post_plaid_webhook", "region", "regions"), ("post_user", "body.region", "regions"),
        ("create_session", "body.user_id", "users"),
        ("create_session", "body.redirect_uri", "redirects"),
    ):
        parts.append(bind(operation, parameter, dictionary))
    return "\n".join(parts)


async def test_every_answer_matches_the_published_contract(
    world: World, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(world))
    report = tmp_path / "report"
    env = {
        **os.environ, "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.aggregator.http.contract_checks",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{world.url}/openapi.json",
        "--checks", f"{CHECKS},problem_details",
        "-H", f"Authorization: Bearer {world.api_key}",
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers", "1", "--request-timeout", "20", "--max-redirects", "0",
        "--report", "junit", "--report-dir", str(report),
        cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode("utf-8", "replace")
    assert process.returncode == 0, text
    assert "No issues found" in text or "passed" in text, text
    print(text)  # the run's summary (operations, phases, warnings), shown with `pytest -s`
