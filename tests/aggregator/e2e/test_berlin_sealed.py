"""A Berlin Group bank that demands QSealC-sealed requests, end to end on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aggregator.applications import create_application
from aggregator.custody import RegionCustody
from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.serving import base_url, bind, serving
from aggregator.link.wiring import install
from aggregator.models import Connection
from aggregator.sandbox import SandboxBank, SandboxConfig
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from connectors import EgressPolicy, load_profiles
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway, gateway_client
from tests.connectors.consents.qsealc import make_qsealc

BANK = "sandbox-berlin"


@pytest.fixture(params=["oauth", "redirect"])
async def sealed(
    request: pytest.FixtureRequest, settings: Settings, region_router: RegionRouter,
    custody: dict[str, RegionCustody], tmp_path: Path,
) -> AsyncIterator[Gateway]:
    cert, key = make_qsealc(tmp_path)
    bank = SandboxBank(SandboxConfig(clients=[gateway_client()]))
    bank.berlin.require_signatures = True
    async with bank.serve() as bank_url, httpx.AsyncClient(timeout=10) as http:
        profiles = load_profiles([], {BANK: {
            "issuer": bank_url, "api.base_url": f"/xs2a/{request.param}",
            "berlin_group.sca_approach": request.param,
            "berlin_group.signing_certificate_file": str(cert),
            "berlin_group.signing_key_file": str(key),
        }})
        # The sealed bank gets a client of its own, built under the egress policy.
        banks = BankDirectory(profiles, http, policy=EgressPolicy(allow_http_loopback=True))
        services = Services(settings, region_router, custody, banks)
        sock = bind("127.0.0.1", 0)
        install(services, public_url=base_url(sock))
        app = create_app(settings, services=services)
        app_id, api_key = await create_application(region_router, "Budgetly", [APP_REDIRECT])
        async with (
            serving(app, sock) as url,
            httpx.AsyncClient(base_url=url, timeout=20,
                              headers={"Authorization": f"Bearer {api_key}"}) as api,
            httpx.AsyncClient(timeout=20) as browser,
        ):
            yield Gateway(url, bank, bank_url, services, api, browser, app_id)
        await banks.aclose()


async def test_link_sync_and_removal_are_sealed(sealed: Gateway) -> None:
    user_id = await sealed.user("eu")
    walk = await sealed.walk(await sealed.link_url(user_id, bank_id=BANK))
    query = walk.landed_query
    assert query["outcome"] == "success", walk.hops
    connection_id = query["connection_id"]
    accounts = (await sealed.api.get(f"/v1/connections/{connection_id}/accounts")).json()
    assert accounts["data"]
    assert (await sealed.api.post(f"/v1/connections/{connection_id}/sync")).status_code == 200
    async with sealed.services.router.reader("eu") as session:
        found = await session.get(Connection, connection_id)
    assert found is not None
    assert found.consent_id is not None
    assert (await sealed.api.delete(f"/v1/connections/{connection_id}")).status_code in (200,
                                                                                       204)
    assert sealed.bank.berlin.all()[found.consent_id].status == "terminatedByTpp"
