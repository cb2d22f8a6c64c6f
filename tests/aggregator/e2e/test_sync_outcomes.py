"""Syncs against a bank that lacks or refuses a resource, or fails once: per-resource
outcomes, what the API shows about them, and the events (sandbox fault switches)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from aggregator.models import Credential
from aggregator.models.base import utcnow
from aggregator.sandbox import Faults
from tests.aggregator.e2e.conftest import Gateway


async def _events(gateway: Gateway, connection_id: str) -> list[dict[str, Any]]:
    answer = await gateway.api.get("/v1/events")
    assert answer.status_code == 200, answer.text
    return [e for e in answer.json()["data"] if e["data"].get("connection_id") == connection_id]


async def _get(gateway: Gateway, path: str) -> Any:
    answer = await gateway.api.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _freshness(account: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["resource"]: f for f in account["freshness"]}


async def test_a_bank_without_balances_still_gives_accounts_and_transactions(
    gateway: Gateway,
) -> None:
    gateway.bank.faults = Faults(missing_resources=("balances",))
    _, connection_id = await gateway.link("eu")

    accounts = (await _get(gateway, f"/v1/connections/{connection_id}/accounts"))["data"]
    assert accounts, "the account list must survive a missing resource"
    for account in accounts:
        assert account["balance"] is None
        fresh = _freshness(account)
        assert fresh["balances"]["outcome"] == "not_offered"
        assert fresh["balances"]["synced_at"] is None
        assert fresh["balances"]["error"]["code"] == "not_offered"
        assert fresh["transactions"]["outcome"] == "ok"
        assert fresh["transactions"]["synced_at"] is not None
    entries = await _get(gateway, f"/v1/accounts/{accounts[0]['id']}/transactions")
    assert entries["data"]

    connection = await _get(gateway, f"/v1/connections/{connection_id}")
    assert connection["last_sync_outcome"] == "partial"
    assert connection["last_synced_at"] is not None
    assert connection["last_error"]["code"] == "not_offered"
    assert "UK.OBIE" not in connection["last_error"]["message"]  # never the bank's body
    assert connection["in_flight"] is None

    (run,) = (await _get(gateway, f"/v1/connections/{connection_id}/syncs"))["data"]
    assert run["outcome"] == "partial"
    assert run["trigger"] == "link"
    assert run["request_id"]  # the bank's x-fapi-interaction-id of the account list
    balances = [r for r in run["resources"] if r["resource"] == "balances"]
    assert {r["outcome"] for r in balances} == {"not_offered"}
    assert all(r["request_id"] for r in balances)  # each refused call can be quoted
    assert {r["account_id"] for r in balances} == {a["id"] for a in accounts}
    partial = [e for e in await _events(gateway, connection_id) if e["type"] == "sync.partial"]
    assert [e["data"]["reason"] for e in partial] == ["not_offered"]


async def test_a_403_on_transactions_keeps_what_was_read_and_removes_nothing(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("eu")
    accounts = (await _get(gateway, f"/v1/connections/{connection_id}/accounts"))["data"]
    before = await _get(gateway, f"/v1/accounts/{accounts[0]['id']}/transactions")
    first_read = _freshness(accounts[0])["transactions"]["synced_at"]

    gateway.bank.faults = Faults(forbidden_resources=("transactions",))
    gateway.bank.advance_day()
    synced = await gateway.api.post(f"/v1/connections/{connection_id}/sync")

    assert synced.status_code == 200, synced.text
    assert synced.json()["outcome"] == "partial"
    assert synced.json()["removed"] == 0  # unread is not gone
    after = await _get(gateway, f"/v1/accounts/{accounts[0]['id']}/transactions")
    assert {t["id"] for t in after["data"]} == {t["id"] for t in before["data"]}
    account = (await _get(gateway, f"/v1/connections/{connection_id}/accounts"))["data"][0]
    fresh = _freshness(account)
    assert fresh["transactions"]["outcome"] == "not_permitted"
    assert fresh["transactions"]["synced_at"] == first_read  # the last good read stays
    assert fresh["balances"]["outcome"] == "ok"
    assert account["balance"] is not None
    runs = (await _get(gateway, f"/v1/connections/{connection_id}/syncs"))["data"]
    assert [r["outcome"] for r in runs] == ["partial", "complete"]  # newest first
    assert runs[0]["trigger"] == "on_demand"
    assert runs[0]["id"] == synced.json()["sync_id"]
    assert runs[0]["error"]["code"] == "not_permitted"


async def test_a_transient_outage_fails_the_sync_whole_and_the_next_one_completes(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("us")
    gateway.bank.faults = Faults(fail_next=1)

    failed = await gateway.api.post(f"/v1/connections/{connection_id}/sync")
    assert failed.status_code in (502, 503), failed.text
    connection = await _get(gateway, f"/v1/connections/{connection_id}")
    assert connection["last_sync_outcome"] == "failed"
    assert connection["last_error"]["code"] == "bank_unavailable"
    assert connection["status"] == "active"

    again = await gateway.api.post(f"/v1/connections/{connection_id}/sync")
    assert again.status_code == 200, again.text
    assert again.json()["outcome"] == "complete"
    connection = await _get(gateway, f"/v1/connections/{connection_id}")
    assert connection["last_sync_outcome"] == "complete"
    assert connection["last_error"] is None
    types = [e["type"] for e in await _events(gateway, connection_id)]
    assert types.count("sync.failed") == 1
    assert types.count("sync.completed") == 2  # the link's sync and the last one


async def test_sync_runs_are_paged_newest_first(gateway: Gateway) -> None:
    _, connection_id = await gateway.link("eu")
    for _ in range(2):
        answer = await gateway.api.post(f"/v1/connections/{connection_id}/sync")
        assert answer.status_code == 200, answer.text
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await gateway.api.get(f"/v1/connections/{connection_id}/syncs",
                                      params=params)).json()
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 3
    other = await gateway.api.get(f"/v1/connections/{connection_id}/syncs",
                                  params={"limit": "101"})
    assert other.status_code == 422  # bounded


async def test_a_refresh_cut_off_by_a_dead_worker_is_reported_not_plain_active(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("eu")
    router = gateway.services.router
    async with router.session("eu") as session, session.begin():
        await session.execute(update(Credential).values(
            refresh_started_at=utcnow() - timedelta(seconds=20), lease_owner="dead:1",
            lease_expires_at=utcnow() + timedelta(seconds=10)))
    live = await _get(gateway, f"/v1/connections/{connection_id}")
    assert live["in_flight"] is None  # a refresh under a live lease is just running

    async with router.session("eu") as session, session.begin():
        await session.execute(update(Credential).values(
            lease_expires_at=utcnow() - timedelta(seconds=1)))
    stale = await _get(gateway, f"/v1/connections/{connection_id}")
    assert stale["status"] == "active"
    assert stale["in_flight"] == "refresh_unresolved"
