"""Plaid end to end over real sockets: the gateway and a loopback Plaid under uvicorn,
the real plaid-python client between them, on SQLite and on PostgreSQL.

The app's backend is played by an httpx client with an API key, its frontend's Plaid
Link by :meth:`FakePlaid.complete_link`, Plaid's webhooks by signed POSTs to the
gateway, and the worker by :class:`~aggregator.worker.plaid.PlaidSweep` passes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from aggregator.applications import create_application
from aggregator.custody import RegionCustody
from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.serving import base_url, bind, serving
from aggregator.ids import ConnectionId
from aggregator.link.wiring import install
from aggregator.models import Credential, PlaidWebhookEvent, SyncSpend, SyncState
from aggregator.models.base import utcnow
from aggregator.plaid.wiring import install_plaid_webhooks
from aggregator.settings import PlaidRegion, Settings
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory, Syncer, spend_for_sync
from aggregator.worker.plaid import PlaidSweep
from aggregator.worker.sync_schedule import SyncSchedule
from connectors import EgressPolicy, PlaidConfig, PlaidEnvironment, SyncPolicy
from tests.aggregator._logs import LogLines, json_log_lines
from tests.connectors.plaid.fake_plaid import (
    CLIENT_ID,
    SECRET,
    FakePlaid,
    SigningKey,
    plaid_transaction,
)
from vault import Secret

APP_REDIRECT = "https://app.example/linked"


@dataclass
class PlaidGateway:
    url: str
    plaid: FakePlaid
    key: SigningKey
    api: httpx.AsyncClient
    sweep: PlaidSweep
    router: RegionRouter

    async def user(self) -> str:
        answer = await self.api.post("/v1/users", json={"external_id": "c-1", "region": "us"})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def session(self, user_id: str, **extra: str) -> dict[str, Any]:
        answer = await self.api.post("/v1/link/sessions", json={
            "user_id": user_id, "redirect_uri": APP_REDIRECT, **extra})
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    async def link(self, user_id: str) -> str:
        started = await self.session(user_id, bank_id="plaid")
        public = self.plaid.complete_link(started["plaid"]["link_token"])
        done = await self.api.post("/v1/plaid/exchange", json={
            "link_session_id": started["link_session_id"], "public_token": public})
        assert done.status_code == 200, done.text
        return str(done.json()["id"])

    async def webhook(self, payload: dict[str, Any]) -> str:
        body = json.dumps({**payload, "environment": "sandbox"}).encode()
        async with httpx.AsyncClient(timeout=10) as plaid_side:
            answer = await plaid_side.post(f"{self.url}/webhooks/plaid/us", content=body, headers={
                "Content-Type": "application/json",
                "Plaid-Verification": self.plaid.sign(body, self.key)})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["status"])

    async def work(self) -> int:
        return await self.sweep.run_once(asyncio.Event())

    async def events(self, connection_id: str) -> list[str]:
        answer = await self.api.get("/v1/events")
        assert answer.status_code == 200, answer.text
        return [e["type"] for e in answer.json()["data"]
                if e["data"].get("connection_id") == connection_id]

    def item(self) -> str:
        (item,) = self.plaid.access_tokens.values()
        return item


@pytest.fixture
async def plaid_gateway(
    settings: Settings, region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> AsyncIterator[PlaidGateway]:
    fake = FakePlaid(strict_public_tokens=True)
    key = fake.add_key()
    async with (
        serving(fake.app(), bind("127.0.0.1", 0)) as plaid_url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        config = PlaidConfig("us", CLIENT_ID, Secret(SECRET), PlaidEnvironment.SANDBOX,
                             host=plaid_url, timeout=5.0)
        regions = dict(settings.regions)
        regions["us"] = dataclasses.replace(
            regions["us"], plaid=PlaidRegion(config, SyncPolicy(daily_budget=10)))
        with_plaid = dataclasses.replace(  # the loopback Plaid: a development opt-in
            settings, regions=regions, egress=EgressPolicy(allow_http_loopback=True))
        banks = BankDirectory({}, http)
        services = Services(with_plaid, region_router, custody, banks)
        sock = bind("127.0.0.1", 0)
        install(services, public_url=base_url(sock))
        install_plaid_webhooks(services)
        app = create_app(with_plaid, services=services)
        _, api_key = await create_application(region_router, "Budgetly", [APP_REDIRECT])
        sweep = PlaidSweep(region_router, syncer=Syncer(region_router, custody, banks),
                           banks=banks)
        async with (
            serving(app, sock) as url,
            httpx.AsyncClient(base_url=url, timeout=20,
                              headers={"Authorization": f"Bearer {api_key}"}) as api,
        ):
            yield PlaidGateway(url, fake, key, api, sweep, region_router)
        banks.plaid("us").close()


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    with json_log_lines(logging.DEBUG) as lines:
        yield lines


def _cursors(plaid: FakePlaid) -> list[str]:
    return [body.get("cursor", "") for path, body in plaid.requests
            if path == "/transactions/sync"]


async def _app_sync(gw: PlaidGateway, connection_id: str, cursor: str = "") -> dict[str, Any]:
    answer = await gw.api.get(f"/v1/connections/{connection_id}/transactions/sync",
                              params={"cursor": cursor} if cursor else {})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_link_sync_by_webhook_reauth_and_update_mode(
    plaid_gateway: PlaidGateway, log_lines: LogLines,
) -> None:
    gw, plaid = plaid_gateway, plaid_gateway.plaid
    user_id = await gw.user()

    # 1. Link: a Plaid link token made for our user id, with the region's webhook URL.
    started = await gw.session(user_id, bank_id="plaid")
    made = plaid.link_tokens[-1]
    assert made["user"] == {"client_user_id": user_id}
    assert made["webhook"] == f"{gw.url}/webhooks/plaid/us"
    assert (made["products"], made["country_codes"]) == (["transactions"], ["US"])
    assert "access_token" not in made
    assert started["plaid"]["link_token"] == made["_issued"]
    public = plaid.complete_link(started["plaid"]["link_token"])
    exchange = {"link_session_id": started["link_session_id"], "public_token": public}
    linked = await gw.api.post("/v1/plaid/exchange", json=exchange)
    assert linked.status_code == 200, linked.text
    connection = linked.json()
    connection_id = connection["id"]
    assert (connection["bank_id"], connection["status"]) == ("plaid", "active")
    replay = await gw.api.post("/v1/plaid/exchange", json=exchange)
    assert replay.status_code == 409
    assert await gw.events(connection_id) == ["connection.created", "sync.completed"]
    (access_token,) = plaid.access_tokens
    async with gw.router.reader("us") as session:
        sealed = (await session.execute(select(Credential.access_token_sealed))).scalar_one()
    assert access_token.encode() not in sealed
    accounts = (await gw.api.get(f"/v1/connections/{connection_id}/accounts")).json()["data"]
    assert sorted(a["name"] for a in accounts) == ["Plaid Checking", "Plaid Credit Card"]

    # 2. A webhook asks for a sync: three pages, and Plaid mutates during the second.
    plaid.pages = [
        {"added": [plaid_transaction("p-1", 4.5, pending=True)]},
        {"added": [plaid_transaction("t-1", 12.0, name="Grocer")]},
        {"added": [plaid_transaction("t-2", -100.0, account_id="acc-2", name="Refund")]},
    ]
    plaid.mutate_on = {1}
    assert await gw.webhook({"webhook_type": "TRANSACTIONS",
                             "webhook_code": "SYNC_UPDATES_AVAILABLE", "item_id": gw.item(),
                             "historical_update_complete": True}) == "stored"
    assert await gw.work() == 1
    assert _cursors(plaid)[-5:] == ["cur-0", "cur-1", "cur-0", "cur-1", "cur-2"]
    first = await _app_sync(gw, connection_id)
    assert sorted(t["description"] for t in first["added"]) == ["Coffee Shop", "Grocer",
                                                                "Refund"]
    pending_id = next(t["id"] for t in first["added"] if t["status"] == "pending")
    async with gw.router.reader("us") as session:
        state = await session.get(SyncState, connection_id)
        spent = list((await session.execute(select(SyncSpend.reason))).scalars())
        outcomes = list((await session.execute(select(PlaidWebhookEvent.outcome))).scalars())
    assert state is not None
    assert state.upstream_cursor == "cur-3"
    assert spent == ["webhook", "webhook"]  # one unit of accounts, one of transactions
    assert outcomes == ["synced"]

    # 3. The pending entry posts: Plaid adds the posted one and removes the pending one.
    plaid.pages.append({
        "added": [plaid_transaction("t-3", 4.75, pending_id="p-1")],
        "removed": [{"transaction_id": "p-1", "account_id": "acc-1"}],
    })
    await gw.webhook({"webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE",
                      "item_id": gw.item(), "n": 2})
    assert await gw.work() == 1
    second = await _app_sync(gw, connection_id, first["next_cursor"])
    assert [r["transaction_id"] for r in second["removed"]] == [pending_id]
    assert [(t["status"], Decimal(t["amount"])) for t in second["added"]] == [
        ("booked", Decimal("-4.75"))]

    # 4. The bank login breaks: reauth_required, and the app is told.
    plaid.login_required.add(gw.item())
    await gw.webhook({"webhook_type": "ITEM", "webhook_code": "ERROR", "item_id": gw.item(),
                      "error": {"error_code": "ITEM_LOGIN_REQUIRED",
                                "error_type": "ITEM_ERROR"}})
    assert await gw.work() == 1
    current = (await gw.api.get(f"/v1/connections/{connection_id}")).json()
    assert (current["status"], current["status_reason"]) == ("reauth_required",
                                                              "item_login_required")
    assert (await gw.events(connection_id))[-1] == "connection.reauth_required"
    assert (await gw.api.post(f"/v1/connections/{connection_id}/sync")).status_code == 409

    # 5. Update mode: the Item's access token opens Link; the connection keeps its id.
    update = await gw.session(user_id, connection_id=connection_id)
    assert plaid.link_tokens[-1]["access_token"] == access_token
    assert "products" not in plaid.link_tokens[-1]
    plaid.complete_link(update["plaid"]["link_token"])
    repaired = await gw.api.post("/v1/plaid/exchange",
                                 json={"link_session_id": update["link_session_id"]})
    assert repaired.status_code == 200, repaired.text
    assert (repaired.json()["id"], repaired.json()["status"]) == (connection_id, "active")
    assert "connection.reauthorized" in await gw.events(connection_id)
    assert len(plaid.access_tokens) == 1  # no second Item

    # No token of Plaid's ever reached a log line.
    text = json.dumps(log_lines())
    assert "plaid" in text  # the capture works: the gateway did log this flow
    assert access_token not in text
    assert public not in text


async def test_update_mode_refuses_while_plaid_still_wants_the_login(
    plaid_gateway: PlaidGateway,
) -> None:
    gw = plaid_gateway
    user_id = await gw.user()
    connection_id = await gw.link(user_id)
    gw.plaid.login_required.add(gw.item())
    await gw.webhook({"webhook_type": "ITEM", "webhook_code": "ERROR", "item_id": gw.item(),
                      "error": {"error_code": "ITEM_LOGIN_REQUIRED"}})
    await gw.work()
    update = await gw.session(user_id, connection_id=connection_id)
    answer = await gw.api.post("/v1/plaid/exchange",
                               json={"link_session_id": update["link_session_id"]})
    assert answer.status_code == 409
    assert (await gw.api.get(f"/v1/connections/{connection_id}")).json()["status"] \
        == "reauth_required"


async def test_on_demand_sync_then_removal_removes_the_item(
    plaid_gateway: PlaidGateway,
) -> None:
    gw = plaid_gateway
    connection_id = await gw.link(await gw.user())
    item = gw.item()
    gw.plaid.pages = [{"added": [plaid_transaction("t-9", 3.0)]}]
    synced = await gw.api.post(f"/v1/connections/{connection_id}/sync")
    assert synced.status_code == 200, synced.text
    assert (synced.json()["accounts"], synced.json()["added"]) == (2, 1)
    async with gw.router.reader("us") as session:
        assert list((await session.execute(select(SyncSpend.reason))).scalars()) == [
            "on_demand", "on_demand"]
    removed = await gw.api.delete(f"/v1/connections/{connection_id}")
    assert removed.status_code == 200, removed.text
    assert removed.json()["status"] == "revoked"
    assert gw.plaid.removed_items == [item]
    async with gw.router.reader("us") as session:
        assert (await session.execute(select(Credential))).first() is None


async def test_erasure_removes_the_item_at_plaid(plaid_gateway: PlaidGateway) -> None:
    gw = plaid_gateway
    user_id = await gw.user()
    await gw.link(user_id)
    item = gw.item()
    asked = await gw.api.delete(f"/v1/users/{user_id}")
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["id"]
    view: dict[str, Any] = {}
    for _ in range(100):  # the erasure runs in the gateway, right after the answer
        view = (await gw.api.get(f"/v1/erasure-requests/{request_id}")).json()
        if view["state"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert view["state"] == "completed", view
    (revocation,) = view["receipt"]["revocations"]
    assert (revocation["bank_id"], revocation["outcome"]) == ("plaid", "revoked")
    assert gw.plaid.removed_items == [item]


async def test_plaid_is_refused_where_the_region_has_no_plaid(
    plaid_gateway: PlaidGateway,
) -> None:
    answer = await plaid_gateway.api.post("/v1/users", json={"external_id": "e", "region": "eu"})
    refused = await plaid_gateway.api.post("/v1/link/sessions", json={
        "user_id": answer.json()["id"], "redirect_uri": APP_REDIRECT, "bank_id": "plaid"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["pointer"] == "#/bank_id"


async def test_a_sync_plaid_could_not_serve_is_retried_without_spending_again(
    plaid_gateway: PlaidGateway,
) -> None:
    gw = plaid_gateway
    connection_id = await gw.link(await gw.user())
    gw.plaid.pages = [{"added": [plaid_transaction("t-1", 1.0)]}]
    await gw.webhook({"webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE",
                      "item_id": gw.item()})
    gw.plaid.fail_next = (500, "API_ERROR", "INTERNAL_SERVER_ERROR")
    assert await gw.work() == 0
    async with gw.router.reader("us") as session:
        event = (await session.execute(select(PlaidWebhookEvent))).scalar_one()
        state = await session.get(SyncState, connection_id)
    assert (event.status.value, event.outcome, event.attempts) == (
        "pending", "sync_requested", 2)  # applied once, failed once
    assert state is not None
    assert state.last_error == "bank_unavailable"
    async with gw.router.session("us") as session, session.begin():
        await session.execute(update(PlaidWebhookEvent).values(available_at=utcnow()))
    assert await gw.work() == 1
    async with gw.router.reader("us") as session:
        event = (await session.execute(select(PlaidWebhookEvent))).scalar_one()
        spent = list((await session.execute(select(SyncSpend.reason))).scalars())
    assert (event.status.value, event.outcome) == ("applied", "synced")
    assert spent == ["webhook", "webhook"]  # the retry spent nothing more
    synced = await _app_sync(gw, connection_id)
    assert len(synced["added"]) == 1


async def test_another_application_cannot_finish_the_session(
    plaid_gateway: PlaidGateway,
) -> None:
    gw = plaid_gateway
    started = await gw.session(await gw.user(), bank_id="plaid")
    public = gw.plaid.complete_link(started["plaid"]["link_token"])
    _, other_key = await create_application(gw.router, "Other", [APP_REDIRECT])
    body = {"link_session_id": started["link_session_id"], "public_token": public}
    refused = await gw.api.post("/v1/plaid/exchange", json=body,
                                headers={"Authorization": f"Bearer {other_key}"})
    assert refused.status_code == 404
    assert gw.plaid.access_tokens == {}  # nothing was exchanged
    missing = await gw.api.post("/v1/plaid/exchange",
                                json={"link_session_id": started["link_session_id"]})
    assert missing.status_code == 422  # a new link needs its public token
    assert missing.json()["errors"][0]["pointer"] == "#/public_token"
    done = await gw.api.post("/v1/plaid/exchange", json=body)
    assert done.status_code == 200, done.text


async def test_scheduled_sync_covers_plaid_connections_within_their_budget(
    plaid_gateway: PlaidGateway,
) -> None:
    gw = plaid_gateway
    connection_id = await gw.link(await gw.user())  # Link's own sync: synced just now
    assert gw.sweep.banks is not None
    assert gw.sweep.syncer is not None
    schedule = SyncSchedule(gw.router, gw.sweep.banks, gw.sweep.syncer)
    policy = gw.sweep.banks.plaid_policy("us")
    assert (policy.interval_hours, policy.daily_budget, policy.reserve) == (6, 10, 1)
    interval = timedelta(hours=policy.interval_hours)
    calls = len(_cursors(gw.plaid))
    start = utcnow()

    assert await schedule.run_once(asyncio.Event(), now=start) == 0  # not yet due
    gw.plaid.pages = [{"added": [plaid_transaction("t-1", 3.0)]}]
    due = start + interval + timedelta(minutes=1)
    assert await schedule.run_once(asyncio.Event(), now=due) == 1
    assert len(_cursors(gw.plaid)) == calls + 1  # one item-level /transactions/sync
    assert [t["amount"] for t in (await _app_sync(gw, connection_id))["added"]] == [
        "-3.0000"]  # Plaid: positive = money out

    async def spends() -> list[tuple[str, str, str]]:
        async with gw.router.reader("us") as session:
            rows = await session.execute(
                select(SyncSpend.account_id, SyncSpend.data_type, SyncSpend.reason)
                .order_by(SyncSpend.spent_at, SyncSpend.data_type))
            return [(a, t.value, r) for a, t, r in rows]

    # Spent about the item as a whole, as the webhook path spends: no per-account ledger.
    assert await spends() == [("", "accounts", "scheduled"), ("", "transactions", "scheduled")]
    assert await schedule.run_once(asyncio.Event(), now=due) == 0  # synced: not due

    # Seven more units spent on demand leave 8 of 10 spent; one scheduled sync takes the
    # ninth, and the tenth is the reserve: the next due pass leaves it for a webhook.
    for minutes in range(7):
        await spend_for_sync(gw.router, ConnectionId(connection_id), policy,
                             reason="on_demand", accounts=(),
                             now=due + timedelta(minutes=2 + minutes))
    later = due + interval + timedelta(minutes=10)  # past the interval after the last spend
    assert await schedule.run_once(asyncio.Event(), now=later) == 1
    latest = later + interval
    assert await schedule.run_once(asyncio.Event(), now=latest) == 0
    assert [r for _, t, r in await spends() if t == "transactions"].count("scheduled") == 2
    await spend_for_sync(gw.router, ConnectionId(connection_id), policy, reason="webhook",
                         accounts=(), now=latest)


async def test_a_plaid_connections_accounts_share_its_item_level_budget(
    plaid_gateway: PlaidGateway,
) -> None:
    gw = plaid_gateway
    connection_id = await gw.link(await gw.user())
    path = f"/v1/connections/{connection_id}/accounts"

    def allowed(answer: httpx.Response) -> set[str]:
        assert answer.status_code == 200, answer.text
        return {a["next_sync_allowed_at"] for a in answer.json()["data"]}

    (now,) = allowed(await gw.api.get(path))  # two accounts, one time: within budget
    assert datetime.fromisoformat(now) <= utcnow()
    start = utcnow()
    for minutes in range(10, 0, -1):  # the region's Plaid budget: 10 item-level calls
        await spend_for_sync(gw.router, ConnectionId(connection_id), SyncPolicy(daily_budget=10),
                             reason="on_demand", accounts=(),
                             now=start - timedelta(minutes=minutes))
    (later,) = allowed(await gw.api.get(path))
    connection = (await gw.api.get(f"/v1/connections/{connection_id}")).json()
    assert later == connection["next_sync_allowed_at"]
    assert datetime.fromisoformat(later) == start - timedelta(minutes=10) + timedelta(hours=24)


async def test_plaid_syncs_record_their_runs_shown_by_the_syncs_endpoint(
    plaid_gateway: PlaidGateway,
) -> None:
    gw = plaid_gateway
    connection_id = await gw.link(await gw.user())  # the Link flow's first sync: a run
    gw.plaid.pages = [{"added": [plaid_transaction("t-1", 3.0)]}]
    synced = await gw.api.post(f"/v1/connections/{connection_id}/sync")
    assert synced.status_code == 200, synced.text
    gw.plaid.fail_next = (500, "API_ERROR", "INTERNAL_SERVER_ERROR")  # /accounts/get
    failed = await gw.api.post(f"/v1/connections/{connection_id}/sync")
    assert failed.status_code == 503, failed.text
    await gw.webhook({"webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE",
                      "item_id": gw.item()})
    assert await gw.work() == 1

    listed = await gw.api.get(f"/v1/connections/{connection_id}/syncs")
    assert listed.status_code == 200, listed.text
    runs = listed.json()["data"]
    assert [(r["trigger"], r["outcome"], (r["error"] or {}).get("code")) for r in runs] == [
        ("webhook", "complete", None), ("on_demand", "failed", "bank_unavailable"),
        ("on_demand", "complete", None), ("link", "complete", None)]
    on_demand = runs[2]
    assert (on_demand["accounts"], on_demand["added"], synced.json()["sync_id"]) == (
        2, 1, on_demand["id"])
    accounts = await gw.api.get(f"/v1/connections/{connection_id}/accounts")
    ids = sorted(a["id"] for a in accounts.json()["data"])
    assert sorted((r["account_id"], r["resource"], r["outcome"])
                  for r in on_demand["resources"]) == sorted(
        (a, resource, "ok") for a in ids for resource in ("balances", "transactions"))
    assert runs[1]["resources"] == []
    # The failed sync's /accounts/get was answered (Plaid may count it); its
    # /transactions/sync was never made: that unit came back.
    async with gw.router.reader("us") as session:
        spent = sorted((r, t.value) for r, t in await session.execute(
            select(SyncSpend.reason, SyncSpend.data_type)))
    assert spent == [("on_demand", "accounts"), ("on_demand", "accounts"),
                     ("on_demand", "transactions"), ("webhook", "accounts"),
                     ("webhook", "transactions")]
