"""Without ``[http] public_url`` Link URLs come from ``Host``: loopback hosts only, never a 500.

A gateway on a loopback socket with no public_url (what a proxy in front of it would
forward to): a chosen ``Host`` must neither reach the bank as the ``redirect_uri`` nor
become the link URL handed to an app.
"""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from aggregator.http.app import create_app
from aggregator.http.serving import bind, serving
from aggregator.link.wiring import install
from aggregator.models import LinkSession, LinkStatus
from aggregator.settings import Settings
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway


async def _count(gateway: Gateway) -> int:
    async with gateway.services.router.reader("eu") as session:
        return int((await session.execute(select(func.count(LinkSession.id)))).scalar_one())


async def test_a_chosen_host_gets_no_link_and_no_500(settings: Settings, gateway: Gateway) -> None:
    install(gateway.services, public_url=None)
    app = create_app(settings, services=gateway.services)
    user = await gateway.user("eu")
    async with serving(app, bind("127.0.0.1", 0)) as url, httpx.AsyncClient(
        base_url=url, headers=dict(gateway.api.headers), timeout=20,
    ) as api:
        evil = {"Host": "evil.example"}
        refused = await api.post("/v1/link/sessions", headers=evil, json={
            "user_id": user, "redirect_uri": APP_REDIRECT})
        assert refused.status_code == 421, refused.text
        assert refused.json()["type"].endswith("/misdirected_request")
        assert await _count(gateway) == 0

        made = await api.post("/v1/link/sessions", json={
            "user_id": user, "redirect_uri": APP_REDIRECT})
        assert made.status_code == 201, made.text
        link_url = made.json()["link_url"]
        assert link_url.startswith(url + "/link/")  # built from the loopback Host
        path = link_url.removeprefix(url)
        for answer in (await api.get(path, headers=evil),
                       await api.post(path, headers=evil, data={"bank_id": "sandbox-eu"}),
                       await api.get(path, headers={"Host": "localhost.evil.example"}),
                       await api.get("/link/callback?state=x", headers=evil)):
            assert answer.status_code == 421, answer.text
            assert answer.headers["content-type"].startswith("text/html")
    async with gateway.services.router.reader("eu") as session:
        link = (await session.execute(select(LinkSession))).scalar_one()
    assert link.status is LinkStatus.PENDING
    assert link.bank_id is None
