"""Admin actions do what they say, in the region they concern, and are audited with the
operator as the actor."""

from __future__ import annotations

from sqlalchemy import select, update

from aggregator.models import AuditEvent, ErasureRequest, OutboundEvent, User
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from tests.aggregator._factories import Linked
from tests.aggregator.console.conftest import Console


async def _audited(router: RegionRouter, region: str, action: str) -> list[AuditEvent]:
    async with router.reader(region) as session:
        return list((await session.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        )).scalars())


async def test_redeliver_makes_a_failed_event_due_again(
    admin: Console, linked: Linked, region_router: RegionRouter, operators: dict[str, str]
) -> None:
    async with region_router.session("eu") as session, session.begin():
        event_id = await session.scalar(select(OutboundEvent.id))
        await session.execute(update(OutboundEvent).values(
            next_attempt_at=None, attempts=8, last_error="timeout"))
    page = f"/console/connections/{linked.connection.id}"
    assert "failed" in (await admin.http.get(page)).text
    answer = await admin.post(f"/console/events/{event_id}/redeliver", back=page)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{page}?done=redelivered"
    async with region_router.reader("eu") as session:
        event = await session.get(OutboundEvent, event_id)
    assert event is not None
    assert event.next_attempt_at is not None
    assert event.attempts == 0
    [record] = await _audited(region_router, "eu", "event.redelivered")
    assert (record.actor, record.target_id) == (operators["ada"], event_id)
    shown = await admin.http.get(answer.headers["location"])
    assert 'role="status">The event is due for delivery again' in shown.text


async def test_an_erasure_needs_the_user_id_typed_twice(
    admin: Console, linked: Linked, region_router: RegionRouter, operators: dict[str, str]
) -> None:
    user_id = linked.user.id
    # One character off (not "a" blindly: a random id ends in "a" one time in 32).
    typo_id = user_id[:-1] + ("b" if user_id.endswith("a") else "a")
    typo = await admin.post("/console/erasures", user_id=user_id, confirm=typo_id)
    assert typo.status_code == 400
    assert "Nothing was erased" in typo.text
    async with region_router.reader("eu") as session:
        assert (await session.execute(select(ErasureRequest))).first() is None
    answer = await admin.post("/console/erasures", user_id=user_id, confirm=user_id)
    assert answer.status_code == 303
    async with region_router.reader("eu") as session:
        request = (await session.execute(select(ErasureRequest))).scalar_one()
        user = await session.get(User, user_id)
    assert user is not None
    assert user.erasing_since is not None
    [record] = await _audited(region_router, "eu", "erasure.requested")
    assert (record.actor, record.target_id) == (operators["ada"], request.id)
    listed = (await admin.http.get("/console/erasures")).text
    assert request.id in listed
    assert user_id not in listed  # the request page names the request, not the user


async def test_verify_chain_reports_an_intact_chain_and_a_broken_one(
    admin: Console, linked: Linked, region_router: RegionRouter
) -> None:
    ok = await admin.post("/console/audit/verify", region="us")
    assert ok.status_code == 200
    assert "The audit chain of region us is intact" in ok.text
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 1)
                              .values(occurred_at=utcnow()))
    broken = await admin.post("/console/audit/verify", region="eu")
    assert broken.status_code == 200
    assert 'role="alert">The audit chain of region eu is broken at event 1' in broken.text


async def test_sync_without_a_configured_sync_job_says_so(
    admin: Console, linked: Linked
) -> None:
    answer = await admin.post(f"/console/connections/{linked.connection.id}/sync")
    assert answer.status_code == 501
    assert "no sync job configured" in answer.text


async def test_audit_search_filters_by_action_actor_and_target(
    admin: Console, linked: Linked, operators: dict[str, str]
) -> None:
    found = await admin.http.get("/console/audit", params={
        "action": "operator", "actor": operators["ada"], "region": "us"})
    assert "operator.signed_in" in found.text
    assert "Region eu" not in found.text
    none = await admin.http.get("/console/audit", params={"action": "%"})
    assert "No events match" in none.text


async def test_an_admin_revokes_a_key_and_disables_an_application(
    admin: Console, linked: Linked, region_router: RegionRouter, operators: dict[str, str],
    api_key: str,
) -> None:
    from aggregator.models import ApiKey, Application

    prefix = api_key.split("_")[1]
    app_id = linked.connection.application_id
    revoked = await admin.post(f"/console/keys/{prefix}/revoke")
    assert revoked.status_code == 303
    typo = await admin.post(f"/console/applications/{app_id}/disable", confirm="app_x")
    assert typo.status_code == 400
    disabled = await admin.post(f"/console/applications/{app_id}/disable", confirm=app_id)
    assert disabled.status_code == 303
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            key = await session.get(ApiKey, prefix)
            app = await session.get(Application, app_id)
        assert key is not None
        assert key.revoked_at is not None
        assert app is not None
        assert app.disabled_at is not None
        actions = {(e.actor, e.action) for e in await _audited(region_router, region,
                                                                "api_key.revoked")}
        assert actions == {(operators["ada"], "api_key.revoked")}
