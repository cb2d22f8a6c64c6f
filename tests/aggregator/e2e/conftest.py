"""A sandbox bank and a gateway, both under uvicorn on loopback sockets, per test.

The gateway runs over the ``region_router`` stores of tests/aggregator/conftest.py, so
every test here runs on SQLite and on PostgreSQL. The bank's development client is
registered with the gateway's one callback (``http://127.0.0.1/link/callback``; any
port matches a loopback redirect URI, RFC 8252 §7.3). The application's redirect URI
is on another origin that nothing serves: walks stop at the redirect to it. Every token
the bank issues to the gateway is recorded (``Gateway.issued_tokens``), for tests that
look for it where it must not be.

Browser tests share :func:`chromium` (Debian's Chromium under Playwright, the flags
docs/architecture.md lists in "Performance notes", a fresh profile per context) and
:func:`assert_accessible` (axe-core, pinned in ``axe/package.json``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.applications import create_application
from aggregator.custody import RegionCustody
from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.serving import base_url, bind, serving
from aggregator.link.walk import Walk, link_as_person
from aggregator.link.wiring import install
from aggregator.sandbox import (
    DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
    SandboxBank,
    SandboxClient,
    SandboxConfig,
)
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from connectors import load_profiles
from tests.aggregator._logs import LogLines, json_log_lines

APP_REDIRECT = "https://app.example/linked"
BANK_FOR = {"eu": "sandbox-eu", "us": "sandbox-us"}

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
AXE_DIR = Path(__file__).resolve().parent / "axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"

#: ``await chromium(profile="profile", *, locale=None, width=1280, height=900,
#: bypass_csp=False)`` -> a Playwright persistent browser context.
Chromium = Callable[..., Awaitable[Any]]


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Chromium]:
    """Launches headless Chromium contexts (skipped where Debian's chromium is missing);
    every context and Playwright itself are stopped after the test."""
    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        contexts: list[Any] = []

        async def launch(profile: str = "profile", *, locale: str | None = None,
                         width: int = 1280, height: int = 900, bypass_csp: bool = False,
                         ) -> Any:
            context = await pw.chromium.launch_persistent_context(
                str(tmp_path / profile), executable_path=str(CHROMIUM), args=FLAGS,
                headless=True, viewport={"width": width, "height": height}, locale=locale,
                bypass_csp=bypass_csp,
            )
            contexts.append(context)
            return context

        try:
            yield launch
        finally:
            for context in contexts:
                await context.close()


def axe_source() -> str:
    """axe-core's script, installed from the pinned lock file if it is not there yet."""
    if not AXE_JS.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install axe-core (apt-get install -y npm)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=AXE_DIR, check=True,
                       capture_output=True, timeout=300)
    return AXE_JS.read_text("utf-8")


async def assert_accessible(page: Any, name: str, artifacts: Path) -> None:
    """axe-core reports no violation on ``page``; a screenshot is kept as ``name``.png.

    The script runs through the DevTools protocol (``evaluate``), not a page script, so
    a page keeps its real Content-Security-Policy while it is checked.
    """
    await page.evaluate(axe_source())
    result = await page.evaluate(
        "async () => JSON.stringify((await axe.run(document, {resultTypes: ['violations']}))"
        ".violations.map(v => ({id: v.id, help: v.help, nodes: v.nodes.map(n => n.target)})))"
    )
    violations = json.loads(result)
    assert violations == [], f"{name}: {violations}"
    await asyncio.to_thread(artifacts.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def gateway_client() -> SandboxClient:
    """The sandbox's development client, registered with the gateway's callback path."""
    return SandboxClient(
        client_id=DEV_CLIENT_ID, client_secret=DEV_CLIENT_SECRET,
        redirect_uris=("http://127.0.0.1/link/callback",),
    )


@dataclass
class Gateway:
    """A running gateway and bank, and an API client of one application."""

    url: str
    bank: SandboxBank
    bank_url: str
    services: Services
    api: httpx.AsyncClient
    browser: httpx.AsyncClient
    app_id: str
    #: Every access and refresh token the bank's token endpoint issued to the gateway.
    issued_tokens: list[str] = field(default_factory=list)

    async def user(self, region: str, external_id: str = "customer-1") -> str:
        answer = await self.api.post("/v1/users", json={
            "external_id": external_id, "region": region,
        })
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def link_url(self, user_id: str, **extra: str) -> str:
        answer = await self.api.post("/v1/link/sessions", json={
            "user_id": user_id, "redirect_uri": APP_REDIRECT, **extra,
        })
        assert answer.status_code == 201, answer.text
        return str(answer.json()["link_url"])

    async def walk(self, link_url: str, *, decision: str = "approve") -> Walk:
        return await link_as_person(
            self.browser, link_url, username="alice", password="alice-pass",
            decision=decision, stop_at=APP_REDIRECT,
        )

    async def link(self, region: str, external_id: str = "customer-1") -> tuple[str, str]:
        """A new user of ``region`` linked to the sandbox: (user id, connection id)."""
        user_id = await self.user(region, external_id)
        walk = await self.walk(await self.link_url(user_id))
        query = walk.landed_query
        assert query["outcome"] == "success", walk.hops
        return user_id, query["connection_id"]


@pytest.fixture
def bank_config() -> SandboxConfig:
    """The sandbox bank's settings; a test module overrides this fixture to change them."""
    return SandboxConfig(clients=[gateway_client()])


@pytest.fixture
def profile_overrides() -> dict[str, Any]:
    """Extra bank-profile values for both sandbox profiles; a test module overrides it."""
    return {}


@pytest.fixture
async def gateway(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
    bank_config: SandboxConfig, profile_overrides: dict[str, Any],
) -> AsyncIterator[Gateway]:
    bank = SandboxBank(bank_config)
    issued: list[str] = []
    async with (
        bank.serve() as bank_url,
        httpx.AsyncClient(timeout=10, event_hooks={"response": [_token_watch(issued)]}) as http,
    ):
        profiles = load_profiles(
            [], {b: {"issuer": bank_url, **profile_overrides} for b in BANK_FOR.values()})
        services = Services(settings, region_router, custody, BankDirectory(profiles, http))
        sock = bind("127.0.0.1", 0)
        install(services, public_url=base_url(sock))
        app = create_app(settings, services=services)  # Link routes: gateway_routes()
        app_id, key = await create_application(region_router, "Budgetly", [APP_REDIRECT])
        async with (
            serving(app, sock) as url,
            httpx.AsyncClient(base_url=url, timeout=20,
                              headers={"Authorization": f"Bearer {key}"}) as api,
            httpx.AsyncClient(timeout=20) as browser,
        ):
            yield Gateway(url, bank, bank_url, services, api, browser, app_id, issued)


def _token_watch(issued: list[str]) -> Callable[[httpx.Response], Any]:
    """Record the tokens in each token response: the sandbox keeps only their digests."""

    async def hook(response: httpx.Response) -> None:
        if response.request.method == "POST" and response.request.url.path == "/token":
            await response.aread()
            if response.is_success:
                body = response.json()
                issued.extend(body[k] for k in ("access_token", "refresh_token") if k in body)

    return hook




@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Every record logged during the test, formatted as production writes them."""
    with json_log_lines(logging.DEBUG) as lines:
        yield lines
