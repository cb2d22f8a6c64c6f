"""A FAPI 2.0 bank with DPoP (``sandbox-fapi2``) through the whole gateway, over sockets.

Link (PAR + ``dpop_jkt``, private_key_jwt, DPoP-bound code exchange), sync (every API
call with a proof), refresh by two worker processes in turn (the second one a restart
that must find the connection's key in the database), removal and erasure (the key dies
with the user's data key), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from aggregator.applications import create_application
from aggregator.custody import RegionCustody
from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.serving import base_url, bind, serving
from aggregator.ids import UserId
from aggregator.link.walk import link_as_person
from aggregator.link.wiring import install
from aggregator.models import Credential
from aggregator.models.base import utcnow
from aggregator.sandbox import SandboxConfig
from aggregator.sandbox.fapi2 import (
    FAPI2_CLIENT_ID,
    FAPI2_CLIENT_KEY,
    Fapi2SandboxBank,
    dev_fapi2_client,
)
from aggregator.sandbox_keys import KEY_DIRECTORY, resolve_sandbox_keys
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from aggregator.sync.tokens import open_dpop_key
from aggregator.worker import RefreshContext, WorkerMetrics, lease_batch
from aggregator.worker.refresh import refresh_leased
from connectors import DPoPKey, load_profiles
from tests.aggregator._logs import LogLines
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway, _token_watch
from vault import DataKeyDestroyed

BANK = "sandbox-fapi2"


@pytest.fixture
async def fapi2(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> AsyncIterator[Gateway]:
    client = dev_fapi2_client(settings.data_dir, ("http://127.0.0.1/link/callback",))
    bank = Fapi2SandboxBank(SandboxConfig(clients=[client], require_par=True))
    issued: list[str] = []
    async with (
        bank.serve() as bank_url,
        httpx.AsyncClient(timeout=10, event_hooks={"response": [_token_watch(issued)]}) as http,
    ):
        profiles = resolve_sandbox_keys(load_profiles([], {BANK: {"issuer": bank_url}}),
                                        settings.data_dir)
        services = Services(settings, region_router, custody, BankDirectory(profiles, http))
        sock = bind("127.0.0.1", 0)
        install(services, public_url=base_url(sock))
        app = create_app(settings, services=services)
        app_id, key = await create_application(region_router, "Budgetly", [APP_REDIRECT])
        async with (
            serving(app, sock) as url,
            httpx.AsyncClient(base_url=url, timeout=20,
                              headers={"Authorization": f"Bearer {key}"}) as api,
            httpx.AsyncClient(timeout=20) as browser,
        ):
            yield Gateway(url, bank, bank_url, services, api, browser, app_id, issued)


def _bank(gateway: Gateway) -> Fapi2SandboxBank:
    assert isinstance(gateway.bank, Fapi2SandboxBank)
    return gateway.bank


async def _link(gateway: Gateway) -> tuple[str, str]:
    user_id = await gateway.user("eu")
    walk = await link_as_person(gateway.browser, await gateway.link_url(user_id),
                                username="alice", password="alice-pass", bank_id=BANK,
                                stop_at=APP_REDIRECT)
    assert walk.landed_query["outcome"] == "success", walk.hops
    return user_id, walk.landed_query["connection_id"]


async def _connection_key(gateway: Gateway, connection_id: str) -> tuple[Credential, DPoPKey]:
    custody = gateway.services.custody["eu"]
    async with gateway.services.router.reader("eu") as session:
        credential = (await session.execute(
            select(Credential).where(Credential.connection_id == connection_id))).scalar_one()
        key = await custody.data_keys.load(session, credential.user_id)
    dpop = await open_dpop_key(custody, key, credential)
    assert dpop is not None
    return credential, dpop


async def _worker_refresh(gateway: Gateway, settings: Settings) -> str:
    """One refresh by a freshly started worker: its own bank clients, nonces and lease."""
    router = gateway.services.router
    async with router.session("eu") as session, session.begin():
        await session.execute(update(Credential).values(
            refresh_due_at=utcnow() - timedelta(seconds=1)))
    profiles = resolve_sandbox_keys(load_profiles([], {BANK: {"issuer": gateway.bank_url}}),
                                    settings.data_dir)
    async with httpx.AsyncClient(timeout=10) as http:
        ctx = RefreshContext(router, gateway.services.custody, BankDirectory(profiles, http),
                             WorkerMetrics(), "worker-test", max_interval=timedelta(hours=1))
        [lease] = await lease_batch(router, "eu", "worker-test", now=utcnow(), limit=1,
                                    lease_for=timedelta(seconds=30))
        return await refresh_leased(ctx, "eu", lease)


async def test_link_sync_refresh_across_worker_restart_and_removal(
    fapi2: Gateway, settings: Settings,
) -> None:
    bank = _bank(fapi2)
    _, connection_id = await _link(fapi2)

    accounts = (await fapi2.api.get(f"/v1/connections/{connection_id}/accounts")).json()
    assert sorted(a["name"] for a in accounts["data"]) == ["Everyday", "Rainy day"]
    credential, key = await _connection_key(fapi2, connection_id)
    assert credential.dpop_key_sealed is not None
    assert b"PRIVATE KEY" not in bytes(credential.dpop_key_sealed)  # sealed, not clear
    access, refresh = fapi2.issued_tokens[-2:]
    assert bank.gate.bound_key(access) == bank.gate.bound_key(refresh) == key.thumbprint

    # Two worker processes in turn: the second knows nothing but the database, and the
    # bank accepts its refresh proof only from the key the grant is bound to (§5).
    assert await _worker_refresh(fapi2, settings) == "ok"
    assert await _worker_refresh(fapi2, settings) == "ok"
    assert bank.gate.bound_key(fapi2.issued_tokens[-2]) == key.thumbprint
    _, still = await _connection_key(fapi2, connection_id)
    assert still.thumbprint == key.thumbprint
    assert bank.refused["invalid_dpop_proof"] == 0

    synced = await fapi2.api.post(f"/v1/connections/{connection_id}/sync")
    assert synced.status_code == 200, synced.text

    removed = await fapi2.api.delete(f"/v1/connections/{connection_id}")
    assert removed.status_code in (200, 204), removed.text
    after = (await fapi2.api.get(f"/v1/connections/{connection_id}")).json()
    assert after["status"] == "revoked"


async def test_update_mode_re_consent_brings_a_new_key_and_keeps_the_connection(
    fapi2: Gateway,
) -> None:
    bank = _bank(fapi2)
    user_id, connection_id = await _link(fapi2)
    _, old_key = await _connection_key(fapi2, connection_id)
    old_refresh = fapi2.issued_tokens[-1]

    walk = await link_as_person(
        fapi2.browser, await fapi2.link_url(user_id, connection_id=connection_id),
        username="alice", password="alice-pass", bank_id=BANK, stop_at=APP_REDIRECT)

    assert walk.landed_query == {"connection_id": connection_id, "outcome": "success"}
    _, new_key = await _connection_key(fapi2, connection_id)
    assert new_key.thumbprint != old_key.thumbprint  # a new grant, a new key (§10)
    assert bank.gate.bound_key(fapi2.issued_tokens[-2]) == new_key.thumbprint
    # The superseded grant was revoked at the bank: its refresh token, with a valid proof
    # of its own key, now buys nothing.
    assert bank.store.find_refresh(old_refresh, FAPI2_CLIENT_ID) is None
    synced = await fapi2.api.post(f"/v1/connections/{connection_id}/sync")
    assert synced.status_code == 200, synced.text


async def test_a_bank_refusing_every_proof_costs_one_retry_not_a_loop(fapi2: Gateway) -> None:
    bank = _bank(fapi2)
    _, connection_id = await _link(fapi2)
    # The worst case for a client that retries on a new nonce: the bank hands out a new
    # one with every answer and accepts none of them.
    bank.resource_nonces.current = bank.resource_nonces.rotate  # type: ignore[method-assign]
    before = bank.refused["use_dpop_nonce"]

    answer = await fapi2.api.post(f"/v1/connections/{connection_id}/sync")

    assert answer.status_code >= 400
    assert bank.refused["use_dpop_nonce"] == before + 2  # the call and its one retry
    state = (await fapi2.api.get(f"/v1/connections/{connection_id}")).json()
    assert state["status"] == "active"  # a refused proof is no dead grant


async def test_erasure_destroys_the_dpop_key_with_the_user(fapi2: Gateway) -> None:
    user_id, connection_id = await _link(fapi2)
    credential, _ = await _connection_key(fapi2, connection_id)
    sealed = bytes(credential.dpop_key_sealed or b"")

    erased = await fapi2.api.delete(f"/v1/users/{user_id}")
    assert erased.status_code == 202, erased.text
    for _ in range(100):  # the job runs after the 202: poll, bounded
        state = (await fapi2.api.get(f"/v1/erasure-requests/{erased.json()['id']}")).json()
        if state["state"] == "completed":
            break
        await asyncio.sleep(0.05)
    assert state["state"] == "completed"

    async with fapi2.services.router.reader("eu") as session:
        rows = (await session.execute(select(Credential))).scalars().all()
        with pytest.raises(DataKeyDestroyed):
            await fapi2.services.custody["eu"].data_keys.load(session, UserId(user_id))
    assert rows == []
    assert sealed  # a backup's copy of the blob is all that could remain, and it is dead


async def test_no_private_key_or_dpop_key_material_in_any_log_line(
    fapi2: Gateway, settings: Settings, log_lines: LogLines,
) -> None:
    _, connection_id = await _link(fapi2)
    assert await _worker_refresh(fapi2, settings) == "ok"
    _, key = await _connection_key(fapi2, connection_id)
    pem = key.private_bytes().decode()
    secrets = [line for line in pem.splitlines() if "-----" not in line]
    client_pem = _client_key_lines(settings)
    text = "\n".join(json.dumps(line) for line in log_lines())
    assert text  # the flow logged something: the scan is not vacuous
    for needle in [*secrets, *client_pem, *fapi2.issued_tokens]:
        assert needle not in text


def _client_key_lines(settings: Settings) -> list[str]:
    pem = (settings.data_dir / KEY_DIRECTORY / f"{FAPI2_CLIENT_KEY}.pem").read_text()
    return [line for line in pem.splitlines() if "-----" not in line]
