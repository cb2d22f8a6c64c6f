"""/v1/users: creation in a home region, reads, and every way a request can be wrong."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import select

from aggregator.http.views import ConnectionList, UserOut
from aggregator.ids import new_id
from aggregator.models import AuditEvent, User
from aggregator.store import RegionRouter
from tests.aggregator._factories import LinkFactory
from tests.aggregator.http._helpers import assert_problem, count_rows, parsed
from tests.aggregator.http.conftest import ClientFactory


async def test_create_then_read_a_user_in_its_home_region(
    api: httpx.AsyncClient, region_router: RegionRouter
) -> None:
    created = await api.post("/v1/users", json={"external_id": "ana@example.test",
                                                "region": "us"})
    user = parsed(UserOut, created, 201)
    assert user.id.startswith("usr_us_")
    assert (user.region, user.external_id) == ("us", "ana@example.test")

    assert parsed(UserOut, await api.get(f"/v1/users/{user.id}")) == user
    assert await count_rows(region_router, User) == {"eu": 0, "us": 1}
    async with region_router.reader("us") as session:
        event = (await session.execute(select(AuditEvent))).scalar_one()
    assert (event.action, event.target_id) == ("user.created", user.id)
    assert event.request_id == created.headers["x-request-id"]


async def test_a_second_user_with_the_same_external_id_conflicts(api: httpx.AsyncClient) -> None:
    body = {"external_id": "same", "region": "eu"}
    first = parsed(UserOut, await api.post("/v1/users", json=body), 201)
    again = assert_problem(await api.post("/v1/users", json=body), 409, "conflict")
    assert again["user_id"] == first.id


BAD_BODIES = [
    ("truncated", b'{"external_id": "x", "region": "eu"', 400, "malformed_json"),
    ("duplicate key", b'{"external_id": "x", "external_id": "y", "region": "eu"}', 400,
     "malformed_json"),
    ("NaN", b'{"external_id": NaN, "region": "eu"}', 400, "malformed_json"),
    ("deep nesting", b"[" * 30_000 + b"]" * 30_000, 400, "malformed_json"),
    ("not UTF-8", b"\xff\xfe\x00", 400, "malformed_json"),
    ("empty", b"", 400, "malformed_json"),
    ("unknown field", b'{"external_id": "x", "region": "eu", "admin": true}', 422,
     "validation_failed"),
    ("wrong types", b'{"external_id": 7, "region": ["eu"]}', 422, "validation_failed"),
    ("NUL byte", b'{"external_id": "x\\u0000", "region": "eu"}', 422, "validation_failed"),
    ("lone surrogate", b'{"external_id": "\\ud800", "region": "eu"}', 422,
     "validation_failed"),
    ("region pattern", b'{"external_id": "x", "region": "mars"}', 422, "validation_failed"),
    ("region not served", b'{"external_id": "x", "region": "ap"}', 422, "validation_failed"),
    ("oversized", b'{"external_id": "' + b"x" * 70_000 + b'", "region": "eu"}', 413,
     "content_too_large"),
]


async def test_bad_bodies_get_a_problem_and_write_nothing(
    api: httpx.AsyncClient, region_router: RegionRouter
) -> None:
    # One store for the whole table of cases: a store per case costs more than the cases.
    for case, raw, status, code in BAD_BODIES:
        response = await api.post("/v1/users", content=raw,
                                  headers={"Content-Type": "application/json"})
        assert response.status_code == status, case
        assert_problem(response, status, code)
    assert await count_rows(region_router, User) == {"eu": 0, "us": 0}
    assert await count_rows(region_router, AuditEvent) == {"eu": 0, "us": 0}


async def test_validation_problems_list_each_field(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/users", json={"external_id": "", "extra": 1})
    body = assert_problem(response, 422, "validation_failed")
    assert sorted(body["errors"], key=lambda e: e["pointer"]) == [
        {"detail": "must not be empty", "pointer": "#/external_id"},
        {"detail": "unknown field", "pointer": "#/extra"},
        {"detail": "is required", "pointer": "#/region"},
    ]


async def test_a_chunked_body_over_the_limit_is_refused(api: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    response = await api.post("/v1/users", content=chunks(),
                              headers={"Content-Type": "application/json"})
    assert_problem(response, 413, "content_too_large")


async def test_only_json_bodies_are_accepted(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/users", data={"external_id": "x", "region": "eu"})
    assert_problem(response, 415, "unsupported_media_type")


BAD_AUTHORIZATION = [
    None, "", "Bearer", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer agk_nope_nope",
    "Bearer not-a-key", "Bearer agk_abcdefgh_" + "A" * 600,
]


async def test_v1_needs_a_valid_api_key(
    client_factory: ClientFactory, region_router: RegionRouter
) -> None:
    client = client_factory()
    body = json.dumps({"external_id": "x", "region": "eu"})
    for header in BAD_AUTHORIZATION:
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Authorization"] = header
        response = await client.post("/v1/users", content=body, headers=headers)
        assert response.status_code == 401, header
        problem = assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert problem["detail"] == "missing or invalid API key"
    assert await count_rows(region_router, User) == {"eu": 0, "us": 0}


async def test_authentication_comes_before_validation(client_factory: ClientFactory) -> None:
    response = await client_factory().post("/v1/users", content=b"{not json")
    assert_problem(response, 401, "unauthenticated")


BAD_USER_IDS = [
    "nope", "usr_eu_short", "con_eu_" + "a" * 26, "usr_zz_" + "a" * 26, "app_" + "a" * 26,
    "usr_eu_" + "a" * 26, "usr_eu_" + "A" * 26,
]


async def test_unknown_or_malformed_user_ids_are_404(api: httpx.AsyncClient) -> None:
    for path_id in BAD_USER_IDS:
        for path in (f"/v1/users/{path_id}", f"/v1/users/{path_id}/connections"):
            response = await api.get(path)
            assert response.status_code == 404, path
            assert_problem(response, 404)


async def test_an_application_never_sees_another_applications_users(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    assert parsed(UserOut, await api.get(f"/v1/users/{linked.user.id}")).id == linked.user.id
    mine = assert_problem(await other_api.get(f"/v1/users/{linked.user.id}"), 404, "not_found")
    never = assert_problem(await other_api.get(f"/v1/users/{new_id('usr', 'eu')}"), 404,
                           "not_found")
    assert mine["detail"] == never["detail"]  # no oracle for ids of other applications
    assert_problem(await other_api.get(f"/v1/users/{linked.user.id}/connections"), 404)
    # The same external id is a different user for another application.
    body = {"external_id": "user-0@example.test", "region": "eu"}
    assert (await other_api.post("/v1/users", json=body)).status_code == 201


async def test_a_forged_cross_region_id_is_404(
    api: httpx.AsyncClient, make_linked: LinkFactory
) -> None:
    linked = await make_linked("eu")
    forged = linked.user.id.replace("usr_eu_", "usr_us_")
    assert_problem(await api.get(f"/v1/users/{forged}"), 404, "not_found")


async def test_a_users_connections_are_listed(
    api: httpx.AsyncClient, make_linked: LinkFactory
) -> None:
    linked = await make_linked("us")
    listed = parsed(ConnectionList, await api.get(f"/v1/users/{linked.user.id}/connections"))
    assert [c.id for c in listed.data] == [linked.connection.id]
    assert listed.data[0].status.value == "active"
