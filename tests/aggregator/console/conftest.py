"""Fixtures for the operator console: operators of both roles, a signed-in client, data.

The gateway app is the one of tests/aggregator/http/conftest.py (its fixtures are
imported here), so every test runs on SQLite and on PostgreSQL. The client talks to
``https://console.test`` through ``httpx.ASGITransport``: the scheme is https so the
cookie jar keeps and sends the ``__Host-`` (``Secure``) cookies, as a browser would.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from aggregator.events.outbox import emit
from aggregator.models import OperatorRole
from aggregator.operators import create_operator
from aggregator.store import RegionRouter
from aggregator.store.engines import create_region_engine
from tests.aggregator._factories import Linked, LinkFactory
from tests.aggregator.http import conftest as http_fixtures

# The HTTP layer's gateway over the test stores, reused by name.
bank = http_fixtures.bank
bank_switch = http_fixtures.bank_switch
bank_http = http_fixtures.bank_http
services = http_fixtures.services
make_app = http_fixtures.make_app
api_key = http_fixtures.api_key

ORIGIN = "https://console.test"
PASSWORDS = {"ada": "correct horse battery staple", "vic": "viewer-password-42"}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_NONCE = re.compile(r'name="nonce" value="([^"]+)"')


@dataclass
class Console:
    """One browser's session with the console (cookies kept by the client)."""

    http: httpx.AsyncClient

    async def sign_in(self, name: str, password: str | None = None) -> httpx.Response:
        form = await self.http.get("/console/sign-in")
        nonce = _NONCE.search(form.text)
        assert nonce, form.text
        return await self.http.post("/console/sign-in", data={
            "name": name, "password": password or PASSWORDS[name], "nonce": nonce.group(1),
            "next": "/console",
        })

    async def csrf(self) -> str:
        page = await self.http.get("/console")
        found = _CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    async def post(self, path: str, **fields: str) -> httpx.Response:
        return await self.http.post(path, data={"csrf": await self.csrf(), **fields})


ConsoleFactory = Callable[[], Awaitable[Console]]


@contextlib.contextmanager
def region_down(router: RegionRouter, region: str) -> Iterator[None]:
    """Point ``region``'s engine at a closed port, as if its database were down."""
    down = create_region_engine(region, "postgresql+psycopg://postgres@127.0.0.1:9/none"
                                "?connect_timeout=1")
    saved = router._engines[region], router._readers[region], router._writers[region]
    router._engines[region] = down
    router._readers[region] = router._maker(region, down, writes=False)
    router._writers[region] = router._maker(region, down, writes=True)
    try:
        yield
    finally:
        router._engines[region], router._readers[region], router._writers[region] = saved


@pytest.fixture
async def operators(region_router: RegionRouter) -> dict[str, str]:
    """``ada`` (admin) and ``vic`` (viewer), in every region."""
    ids: dict[str, str] = {}
    for name, role in (("ada", OperatorRole.ADMIN), ("vic", OperatorRole.VIEWER)):
        ids[name] = await create_operator(region_router, name, role, PASSWORDS[name])
    return ids


@pytest.fixture
async def console_factory(make_app: Callable[..., object],
                          operators: dict[str, str]) -> AsyncIterator[ConsoleFactory]:
    app = make_app()
    clients: list[httpx.AsyncClient] = []

    async def make() -> Console:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                   base_url=ORIGIN)
        clients.append(client)
        return Console(client)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def admin(console_factory: ConsoleFactory) -> Console:
    console = await console_factory()
    answer = await console.sign_in("ada")
    assert answer.status_code == 303, answer.text
    return console


@pytest.fixture
async def viewer(console_factory: ConsoleFactory) -> Console:
    console = await console_factory()
    answer = await console.sign_in("vic")
    assert answer.status_code == 303, answer.text
    return console


@pytest.fixture
async def linked(make_linked: LinkFactory, region_router: RegionRouter) -> Linked:
    """A linked user in ``eu`` with an outbound event about its connection."""
    found = await make_linked("eu", external_id="erika@example.test",
                              iban="DE89370400440532013000", holder="Erika Mustermann",
                              access_token="at-sealed-secret", refresh_token="rt-sealed-secret")
    async with region_router.session("eu") as session, session.begin():
        await emit(session, found.connection.application_id, "connection.created",
                   {"connection_id": found.connection.id, "user_id": found.user.id})
    return found
