"""The sync job over real sockets: cursors, pending entries booking later, token refresh."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from aggregator.models import Credential
from aggregator.models.base import utcnow
from tests.aggregator.e2e.conftest import Gateway


async def _drain(gateway: Gateway, connection_id: str, cursor: str | None) -> dict[str, Any]:
    """Every change since ``cursor``, following ``has_more``, as Plaid clients do."""
    added: list[dict[str, Any]] = []
    modified: list[dict[str, Any]] = []
    removed: list[str] = []
    for _ in range(50):
        params = {"count": "40", **({"cursor": cursor} if cursor else {})}
        page = (await gateway.api.get(
            f"/v1/connections/{connection_id}/transactions/sync", params=params
        )).json()
        added += page["added"]
        modified += page["modified"]
        removed += [r["transaction_id"] for r in page["removed"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    return {"added": added, "modified": modified, "removed": removed, "cursor": cursor}


async def test_pending_entries_booked_later_are_reported_removed_and_added(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("eu")
    first = await _drain(gateway, connection_id, None)
    pending = {t["id"]: t for t in first["added"] if t["status"] == "pending"}
    assert pending
    assert not first["removed"]
    assert not first["modified"]

    gateway.bank.advance_day()
    synced = await gateway.api.post(f"/v1/connections/{connection_id}/sync")
    assert synced.status_code == 200, synced.text
    counts = synced.json()
    second = await _drain(gateway, connection_id, first["cursor"])

    assert set(second["removed"]) == set(pending)
    booked = [t for t in second["added"] if t["status"] == "booked"]
    assert sorted(t["amount"] for t in booked) == sorted(t["amount"] for t in pending.values())
    assert not {t["id"] for t in second["added"]} & set(pending)
    assert counts["removed"] == len(pending)
    assert counts["added"] == len(second["added"])
    # Nothing new since the last cursor: an empty answer that keeps its position.
    third = await _drain(gateway, connection_id, second["cursor"])
    assert third["added"] == third["modified"] == third["removed"] == []


async def test_an_expired_access_token_is_refreshed_and_the_rotation_persisted(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("us")
    router = gateway.services.router
    async with router.session("us") as session, session.begin():
        await session.execute(update(Credential).values(
            access_expires_at=utcnow() - timedelta(minutes=1)
        ).execution_options(synchronize_session=False))
    async with router.reader("us") as session:
        before = (await session.execute(select(Credential))).scalar_one()

    synced = await gateway.api.post(f"/v1/connections/{connection_id}/sync")

    assert synced.status_code == 200, synced.text
    async with router.reader("us") as session:
        after = (await session.execute(select(Credential))).scalar_one()
    assert after.version == before.version + 2  # claimed, then persisted
    assert after.refresh_token_sealed != before.refresh_token_sealed
    assert after.access_expires_at is not None
    assert after.access_expires_at > utcnow()
    assert after.refresh_due_at is not None
    assert after.refresh_due_at < after.access_expires_at
    assert after.lease_owner is None
    assert after.refresh_started_at is None
