"""``/v1/webhook-endpoint`` and ``/v1/events``: configuring, listing and redelivering."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from aggregator.events import emit
from aggregator.http.routes.events import EndpointOut, EventOut, EventPage
from aggregator.ids import ApplicationId, new_id
from aggregator.models import OutboundEvent
from aggregator.store import RegionRouter
from tests.aggregator.http._helpers import assert_problem, parsed


async def _erased(router: RegionRouter, app_id: ApplicationId, region: str) -> str:
    async with router.session(region) as session, session.begin():
        return await emit(session, app_id, "user.erased", {
            "erasure_request_id": new_id("era", region), "status": "completed"})


async def test_put_endpoint_shows_the_secret_once_and_rotation_a_new_one(
    api: httpx.AsyncClient, log_lines: object,
) -> None:
    first = parsed(EndpointOut, await api.put("/v1/webhook-endpoint",
                                              json={"url": "https://hooks.example.com/a"}))
    assert first.secret is not None
    assert first.secret.startswith("whsec_")
    again = parsed(EndpointOut, await api.put("/v1/webhook-endpoint",
                                              json={"url": "https://hooks.example.com/b"}))
    assert again.url == "https://hooks.example.com/b"
    assert again.secret is None
    rotated = parsed(EndpointOut, await api.post("/v1/webhook-endpoint/rotate"))
    assert rotated.secret not in (None, first.secret)
    assert rotated.previous_secret_expires_at is not None


async def test_internal_or_plain_http_endpoints_are_refused(api: httpx.AsyncClient) -> None:
    for url in ("http://169.254.169.254/latest", "http://hooks.example.com/",
                "gopher://127.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://2130706433/",
                "https://2130706433/", "https://[::ffff:a9fe:a9fe]/", "https://0x7f.1/",
                "https://10.0.0.5/", "https://localhost/", "https://metadata.google.internal/"):
        response = await api.put("/v1/webhook-endpoint", json={"url": url})
        body = assert_problem(response, 422, "validation_failed")
        assert body["errors"][0]["pointer"] == "#/url"


async def test_events_are_listed_across_regions_in_pages(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, region_router: RegionRouter,
    app_id: ApplicationId,
) -> None:
    made = [await _erased(region_router, app_id, r) for r in ("eu", "us", "eu", "us", "eu")]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = parsed(EventPage, await api.get("/v1/events", params=params))
        seen += [e.id for e in page.data]
        assert all(e.delivery == "pending" for e in page.data)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(made)
    assert len(seen) == 5
    empty = parsed(EventPage, await other_api.get("/v1/events"))
    assert empty.data == []
    future = parsed(EventPage, await api.get("/v1/events",
                                             params={"since": "2999-01-01T00:00:00+00:00"}))
    assert future.data == []
    assert_problem(await api.get("/v1/events", params={"since": "yesterday"}), 422)


async def test_redeliver_makes_the_event_due_and_is_refused_to_other_apps(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, region_router: RegionRouter,
    app_id: ApplicationId,
) -> None:
    event_id = await _erased(region_router, app_id, "us")
    async with region_router.session("us") as session, session.begin():
        event = (await session.execute(
            select(OutboundEvent).where(OutboundEvent.id == event_id))).scalar_one()
        event.next_attempt_at, event.attempts, event.last_error = None, 8, "http_500"
    assert_problem(await other_api.post(f"/v1/events/{event_id}/redeliver"), 404)
    view = parsed(EventOut, await api.post(f"/v1/events/{event_id}/redeliver"), 202)
    assert view.delivery == "pending"
    assert view.attempts == 0
    assert_problem(await api.post("/v1/events/msg_eu_aaaaaaaaaaaaaaaaaaaaaaaaaa/redeliver"), 404)
