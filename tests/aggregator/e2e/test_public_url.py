"""``create_app(settings)`` alone, behind a proxy: every URL the Link flow hands out is public.

The gateway listens on loopback; a TLS-terminating proxy (:class:`ReverseProxy`, an httpx
transport) serves it as ``https://gateway.example`` and forwards with the internal
``Host``, so only ``[http] public_url`` can tell the gateway its public address. The
sandbox bank registers only the public callback, as a real bank would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from aggregator.applications import create_application
from aggregator.custody import RegionCustody
from aggregator.http.app import create_app
from aggregator.http.serving import bind, serving
from aggregator.link.walk import forms_of, link_as_person
from aggregator.sandbox import (
    DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
    SandboxBank,
    SandboxClient,
    SandboxConfig,
)
from aggregator.sandbox.testing import sandbox_profile
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from connectors import EgressPolicy
from tests.aggregator.e2e.conftest import APP_REDIRECT

PUBLIC = "https://gateway.example"
BANK_ID = "proxied-eu"


class ReverseProxy(httpx.AsyncBaseTransport):
    """Sends requests for :data:`PUBLIC` to the gateway's socket, others straight on."""

    def __init__(self, upstream: str) -> None:
        self.upstream = httpx.URL(upstream)
        self.inner = httpx.AsyncHTTPTransport()
        self.forwarded: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == httpx.URL(PUBLIC).host:
            self.forwarded.append(request.url.path)
            url = request.url.copy_with(
                scheme=self.upstream.scheme, host=self.upstream.host, port=self.upstream.port,
            )
            headers = httpx.Headers(request.headers)
            headers["Host"] = self.upstream.netloc.decode()  # what the proxy sends upstream
            request = httpx.Request(request.method, url, headers=headers,
                                    stream=request.stream, extensions=request.extensions)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _profile(directory: Path, bank_url: str) -> Path:
    directory.mkdir()
    (directory / f"{BANK_ID}.toml").write_text(sandbox_profile(
        BANK_ID, bank_url, display_name="Sandbox Bank behind a proxy",
        secret_env="PROXIED_EU_CLIENT_SECRET"))
    return directory


@asynccontextmanager
async def _served(app: Starlette) -> AsyncIterator[str]:
    """The app on a loopback socket with its own lifespan run (uvicorn's is off)."""
    with closing(bind("127.0.0.1", 0)) as sock:
        async with app.router.lifespan_context(app), serving(app, sock) as internal:
            yield internal


# The test keyring also guards the PostgreSQL variant; the gateway rightly warns about it.
@pytest.mark.filterwarnings("ignore::aggregator.keyring.LocalKeyringInProductionWarning")
async def test_with_public_url_the_link_flow_uses_it_for_every_url_it_hands_out(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
    tmp_path: Path,
) -> None:
    bank = SandboxBank(SandboxConfig(clients=[SandboxClient(
        client_id=DEV_CLIENT_ID, client_secret=DEV_CLIENT_SECRET,
        redirect_uris=(f"{PUBLIC}/link/callback",),
    )]))
    _app_id, key = await create_application(region_router, "Budgetly", [APP_REDIRECT])
    async with bank.serve() as bank_url:
        configured = dataclasses.replace(
            settings, public_url=PUBLIC, bank_dirs=(_profile(tmp_path / "banks", bank_url),),
            egress=EgressPolicy.development(),  # the sandbox bank answers on 127.0.0.1
        )
        async with (
            _served(create_app(configured)) as internal,  # no services: its lifespan opens them
            httpx.AsyncClient(transport=ReverseProxy(internal), base_url=PUBLIC, timeout=20,
                              headers={"Authorization": f"Bearer {key}"}) as api,
            httpx.AsyncClient(transport=ReverseProxy(internal), timeout=20) as browser,
        ):
            user = await api.post("/v1/users", json={"external_id": "c-1", "region": "eu"})
            assert user.status_code == 201, user.text
            session = await api.post("/v1/link/sessions", json={
                "user_id": user.json()["id"], "redirect_uri": APP_REDIRECT, "bank_id": BANK_ID,
            })
            assert session.status_code == 201, session.text
            link_url = session.json()["link_url"]
            assert link_url.startswith(f"{PUBLIC}/link/lnk_eu_")

            page = await browser.get(link_url)
            assert page.status_code == 200, page.text
            [picker] = forms_of(page.text)
            assert picker.action == link_url

            walk = await link_as_person(browser, link_url, username="alice",
                                        password="alice-pass", stop_at=APP_REDIRECT)
    # The bank sent the browser to the redirect_uri of the authorization request: the
    # public callback (the bank accepts no other), which the proxy forwarded.
    callbacks = [url for _, url, _ in walk.hops if httpx.URL(url).path == "/link/callback"]
    assert len(callbacks) == 1
    assert callbacks[0].startswith(f"{PUBLIC}/link/callback?")
    assert all(not url.startswith(internal) for _, url, _ in walk.hops)
    assert walk.landed_query["outcome"] == "success", walk.hops
    assert walk.landed_query["connection_id"].startswith("con_eu_")
