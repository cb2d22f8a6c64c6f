"""The outbox: events commit with their change, and carry only ids, codes and counts."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aggregator.errors import EventPayloadRejected
from aggregator.events import UnsafeUrl, check_data, check_url, emit
from aggregator.events.hooks import connection_event
from aggregator.ids import ApplicationId, new_id
from aggregator.models import ConnectionStatus, OutboundEvent
from aggregator.models.base import table_of
from aggregator.store import RegionRouter
from connectors import EgressPolicy
from tests.aggregator._factories import LinkFactory


class Boom(Exception):
    pass


async def _events(router: RegionRouter, region: str = "eu") -> list[OutboundEvent]:
    async with router.reader(region) as session:
        return list((await session.execute(select(OutboundEvent))).scalars())


async def test_rolled_back_change_leaves_no_event(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    connections = table_of(type(linked.connection))

    async def change_then_fail() -> None:
        async with region_router.session("eu") as session, session.begin():
            await session.execute(connections.update().values(
                status=ConnectionStatus.REAUTH_REQUIRED))
            await connection_event(session, linked.connection.id, "connection.reauth_required",
                                   reason="invalid_grant")
            raise Boom

    with pytest.raises(Boom):
        await change_then_fail()
    assert await _events(region_router) == []


async def test_committed_change_has_its_event_with_ids_and_status_only(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu", access_token="at-leak", refresh_token="rt-leak")
    connections = table_of(type(linked.connection))
    async with region_router.session("eu") as session, session.begin():
        await session.execute(connections.update().values(
            status=ConnectionStatus.REAUTH_REQUIRED))
        event_id = await connection_event(session, linked.connection.id,
                                          "connection.reauth_required", reason="invalid_grant")
    (event,) = await _events(region_router)
    assert event.id == event_id
    assert event_id.startswith("msg_eu_")
    assert event.application_id == linked.connection.application_id
    assert event.data == {
        "connection_id": linked.connection.id, "user_id": linked.user.id,
        "bank_id": linked.connection.bank_id, "status": "reauth_required",
        "reason": "invalid_grant",
    }
    assert "leak" not in repr(event.data)
    assert "Mustermann" not in repr(event.data)


@pytest.mark.parametrize("data", [
    {"access_token": "at-secret"},
    {"refresh_token": "x"},
    {"email": "erika@example.com"},
    {"holder_name": "Erika Mustermann"},
    {"connection_id": "DE89370400440532013000"},
    {"user_id": new_id("con", "eu")},
    {"reason": "Erika Mustermann's bank said no"},
    {"accounts": "3"},
])
def test_payload_with_anything_but_ids_codes_and_counts_is_refused(
    data: dict[str, object]
) -> None:
    with pytest.raises(EventPayloadRejected) as caught:
        check_data(data)
    for value in data.values():
        assert str(value) not in str(caught.value)


async def test_unknown_event_type_is_refused(
    region_router: RegionRouter, app_id: ApplicationId
) -> None:
    async with region_router.session("eu") as session, session.begin():
        with pytest.raises(EventPayloadRejected):
            await emit(session, app_id, "connection.deleted", {})


def test_endpoint_url_accepted() -> None:
    assert check_url("https://hooks.example.com/x") == "https://hooks.example.com/x"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hooks", "http://localhost/h", "http://[::1]:9000/",
])
def test_loopback_endpoint_needs_the_development_opt_in(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="loopback"):
        check_url(url)
    assert check_url(url, EgressPolicy.development()) == url


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/x", "ftp://127.0.0.1/", "file:///etc/passwd",
    "https://169.254.169.254/latest/meta-data", "http://169.254.169.254/",
    "https://10.0.0.5/", "https://192.168.1.1/", "https://[::ffff:169.254.169.254]/",
    "https://metadata.google.internal/", "https://user:pw@example.com/", "https://0.0.0.0/",
    "javascript:alert(1)", "https://[fe80::1]/",
])
def test_endpoint_url_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(url)
