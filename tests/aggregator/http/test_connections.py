"""/v1/connections: reads, revocation at the (sandbox) bank, and the sync seam."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select

from aggregator.http import Services, SyncSummary
from aggregator.http.views import ConnectionOut, SyncOut
from aggregator.ids import ConnectionId, new_id
from aggregator.models import AuditEvent, Connection, ConnectionStatus, Credential, SyncSpend
from aggregator.models.base import utcnow
from aggregator.sandbox import DEV_CLIENT_ID, DEV_CLIENT_SECRET, SandboxBank
from aggregator.sandbox.testing import FlowDriver, Served
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from connectors import UserPresence
from tests.aggregator._factories import LinkFactory
from tests.aggregator.http._helpers import assert_problem, count_rows, parsed
from tests.aggregator.http.conftest import BANK_ISSUER, BankSwitch


async def test_a_connection_is_read_by_its_application_only(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    got = parsed(ConnectionOut, await api.get(f"/v1/connections/{linked.connection.id}"))
    assert (got.id, got.user_id, got.bank_id) == (
        linked.connection.id, linked.user.id, "sandbox")
    for path in (f"/v1/connections/{linked.connection.id}",
                 f"/v1/connections/{linked.connection.id}/accounts"):
        assert_problem(await other_api.get(path), 404, "not_found")
    assert_problem(await other_api.delete(f"/v1/connections/{linked.connection.id}"), 404)
    assert_problem(await other_api.post(f"/v1/connections/{linked.connection.id}/sync"), 404)
    assert_problem(await api.get(f"/v1/connections/{new_id('con', 'us')}"), 404, "not_found")
    assert_problem(await api.get(f"/v1/connections/{linked.user.id}"), 404, "malformed_id")


async def test_delete_revokes_the_grant_at_the_bank_and_forgets_the_tokens(
    api: httpx.AsyncClient, make_linked: LinkFactory, bank: SandboxBank,
    bank_http: httpx.AsyncClient, bank_switch: BankSwitch, region_router: RegionRouter,
) -> None:
    driver = FlowDriver(Served(bank, BANK_ISSUER, bank_http), DEV_CLIENT_ID,
                        DEV_CLIENT_SECRET, "http://127.0.0.1/callback")
    tokens = await driver.tokens(scope="accounts offline_access")
    linked = await make_linked("us", access_token=tokens["access_token"],
                               refresh_token=tokens["refresh_token"])

    deleted = parsed(ConnectionOut, await api.delete(f"/v1/connections/{linked.connection.id}"))
    assert deleted.status is ConnectionStatus.REVOKED
    assert deleted.status_reason == "revoked_by_application"
    assert bank_switch.paths.count("/revoke") == 1
    refused = await driver.refresh(tokens["refresh_token"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert await count_rows(region_router, Credential) == {"eu": 0, "us": 0}
    async with region_router.reader("us") as session:
        event = (await session.execute(
            select(AuditEvent).where(AuditEvent.action == "connection.revoked")
        )).scalar_one()
    assert event.target_id == linked.connection.id

    again = await api.delete(f"/v1/connections/{linked.connection.id}")
    assert parsed(ConnectionOut, again).status is ConnectionStatus.REVOKED  # idempotent


async def test_delete_changes_nothing_while_the_bank_is_unreachable(
    api: httpx.AsyncClient, make_linked: LinkFactory, bank_switch: BankSwitch,
    region_router: RegionRouter,
) -> None:
    linked = await make_linked("eu")
    bank_switch.down = True
    response = await api.delete(f"/v1/connections/{linked.connection.id}")
    problem = assert_problem(response, 503, "bank_unavailable")
    assert "sandbox" in problem["detail"]
    async with region_router.reader("eu") as session:
        connection = await session.get(Connection, linked.connection.id)
    assert connection is not None
    assert connection.status is ConnectionStatus.ACTIVE
    assert await count_rows(region_router, Credential) == {"eu": 1, "us": 0}
    assert await count_rows(region_router, AuditEvent) == {"eu": 0, "us": 0}


class RecordingSync:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(self, connection_id: ConnectionId, *, request_id: str, actor: str,
                       presence: UserPresence | None = None,
                       spent_at: datetime | None = None) -> SyncSummary:
        self.calls.append((connection_id, request_id, actor))
        return SyncSummary(accounts=1, added=3, modified=0, removed=1)


async def test_sync_runs_the_configured_job_for_active_connections_only(
    api: httpx.AsyncClient, services: Services, make_linked: LinkFactory, app_id: str,
) -> None:
    linked = await make_linked("eu")
    path = f"/v1/connections/{linked.connection.id}/sync"
    assert_problem(await api.post(path), 501, "not_implemented")

    services.sync = job = RecordingSync()
    response = await api.post(path)
    assert parsed(SyncOut, response) == SyncOut(linked.connection.id, 1, 3, 0, 1)
    assert job.calls == [(linked.connection.id, response.headers["x-request-id"], app_id)]

    await api.delete(f"/v1/connections/{linked.connection.id}")
    assert_problem(await api.post(path), 409, "conflict")
    assert len(job.calls) == 1


async def test_a_burst_of_syncs_stops_at_the_bank_budget_with_429_and_retry_after(
    api: httpx.AsyncClient, services: Services, make_linked: LinkFactory,
    region_router: RegionRouter,
) -> None:
    assert isinstance(services.banks, BankDirectory)
    profile = services.banks.profile("sandbox")
    assert profile.sync.daily_budget == 4  # the PSD2 default of the sandbox profile
    linked = await make_linked("eu")
    services.sync = job = RecordingSync()
    before = utcnow()

    responses = await asyncio.gather(*(
        api.post(f"/v1/connections/{linked.connection.id}/sync") for _ in range(7)
    ))

    assert sorted(r.status_code for r in responses) == [200] * 4 + [429] * 3
    assert len(job.calls) == 4
    # Per sync: the account list, and the one account's balances and transactions.
    assert await count_rows(region_router, SyncSpend) == {"eu": 12, "us": 0}
    refused = [r for r in responses if r.status_code == 429]
    for response in refused:
        problem = assert_problem(response, 429, "sync_budget_exhausted")
        allowed = datetime.fromisoformat(problem["next_sync_allowed_at"])
        assert before + timedelta(hours=24) <= allowed <= utcnow() + timedelta(hours=24)
        assert 23 * 3600 < int(response.headers["retry-after"]) <= 24 * 3600

    got = parsed(ConnectionOut, await api.get(f"/v1/connections/{linked.connection.id}"))
    first = min(datetime.fromisoformat(r.json()["next_sync_allowed_at"]) for r in refused)
    assert got.next_sync_allowed_at == first
    exposition = (await api.get("/metrics")).text
    assert ('aggregator_sync_budget_exhausted_total{bank="sandbox",reason="on_demand"} 3.0'
            in exposition)
    assert 'aggregator_refresh_due_backlog{region="eu"}' in exposition


async def test_next_sync_allowed_at_is_now_with_budget_and_null_when_revoked(
    api: httpx.AsyncClient, services: Services, make_linked: LinkFactory,
) -> None:
    assert isinstance(services.banks, BankDirectory)
    linked = await make_linked("eu")
    before = utcnow()
    got = parsed(ConnectionOut, await api.get(f"/v1/connections/{linked.connection.id}"))
    assert got.next_sync_allowed_at is not None
    assert before <= got.next_sync_allowed_at <= utcnow()

    # A bank that allows one call a day: one sync and the next is 24 h away.
    profile = services.banks.profile("sandbox")
    services.banks = BankDirectory({"sandbox": dataclasses.replace(
        profile, sync=dataclasses.replace(profile.sync, daily_budget=1))}, services.banks.http)
    services.sync = RecordingSync()
    assert (await api.post(f"/v1/connections/{linked.connection.id}/sync")).status_code == 200
    got = parsed(ConnectionOut, await api.get(f"/v1/connections/{linked.connection.id}"))
    assert got.next_sync_allowed_at is not None
    assert got.next_sync_allowed_at - before >= timedelta(hours=24)

    revoked = parsed(ConnectionOut, await api.delete(f"/v1/connections/{linked.connection.id}"))
    assert revoked.next_sync_allowed_at is None
