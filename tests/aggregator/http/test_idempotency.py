"""``Idempotency-Key``: replay, mismatch, concurrency, expiry, sealing, OpenAPI.

Every test runs on SQLite and on PostgreSQL (the ``backend`` parametrisation); the
concurrency tests serve the gateway under uvicorn on a loopback socket, so requests
really overlap in the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from aggregator.custody import RegionCustody
from aggregator.errors import ResidencyViolation
from aggregator.http import Services
from aggregator.http.idempotency import STORE_KEY, store_of
from aggregator.http.serving import base_url, bind, serving
from aggregator.idempotency import (
    Claimed,
    StoredResponse,
    fingerprint,
    key_digest,
    purge_expired,
    user_place,
)
from aggregator.ids import ApplicationId, UserId
from aggregator.link.wiring import install
from aggregator.models import (
    AuditEvent,
    ErasureRequest,
    IdempotencyRecord,
    IdempotencyState,
    LinkSession,
    User,
)
from aggregator.models.base import table_of, utcnow
from aggregator.store import RegionRouter
from aggregator.worker.idempotency import IdempotencyPurge
from tests.aggregator._factories import LinkFactory
from tests.aggregator.conftest import Backend
from tests.aggregator.http._helpers import assert_problem, count_rows
from tests.aggregator.http.conftest import GATEWAY, AppFactory
from vault import DataKeyDestroyed

_keys = table_of(IdempotencyRecord)
REDIRECT = "https://app.test/cb"  # the app_id fixture's allow-listed redirect URI


def _key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def _records(router: RegionRouter, region: str = "eu") -> list[Any]:
    async with router.reader(region) as session:
        return list((await session.execute(select(_keys))).all())


async def _user_created_events(router: RegionRouter) -> int:
    async with router.reader("eu") as session:
        return int((await session.execute(
            select(func.count()).select_from(AuditEvent)
            .where(AuditEvent.action == "user.created")
        )).scalar_one())


@pytest.fixture
async def served(make_app: AppFactory, services: Services, api_key: str
                 ) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the ``app_id`` application on the gateway served over a real socket."""
    sock = bind("127.0.0.1", 0)
    install(services, public_url=base_url(sock))
    async with serving(make_app(), sock) as url, httpx.AsyncClient(
        base_url=url, timeout=30, headers={"Authorization": f"Bearer {api_key}"},
        limits=httpx.Limits(max_connections=16),
    ) as client:
        yield client


# -- replay ----------------------------------------------------------------------


async def test_a_retry_gets_the_same_answer_and_creates_no_second_user(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    body = {"external_id": "customer-7", "region": "eu"}
    first = await api.post("/v1/users", json=body, headers=_key("create-customer-7"))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers

    again = await api.post("/v1/users", json=body, headers=_key("create-customer-7"))
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/json"
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert again.headers["cache-control"] == "no-store"
    assert await count_rows(region_router, User) == {"eu": 1, "us": 0}
    assert await _user_created_events(region_router) == 1  # no work done again


async def test_key_order_and_spacing_of_the_body_do_not_make_another_request(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    first = await api.post("/v1/users", content=b'{"external_id":"c-1","region":"eu"}',
                           headers={**_key("k-1"), "Content-Type": "application/json"})
    again = await api.post("/v1/users", content=b'{ "region": "eu",  "external_id": "c-1" }',
                           headers={**_key("k-1"), "Content-Type": "application/json"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert await count_rows(region_router, User) == {"eu": 1, "us": 0}


async def test_without_a_key_every_request_is_new(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    await api.post("/v1/users", json={"external_id": "a", "region": "eu"})
    await api.post("/v1/users", json={"external_id": "b", "region": "eu"})
    assert await count_rows(region_router, User) == {"eu": 2, "us": 0}
    assert await _records(region_router) == []


async def test_the_record_lives_in_the_region_of_the_resource(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    created = await api.post("/v1/users", json={"external_id": "u", "region": "us"},
                             headers=_key("us-user"))
    assert created.status_code == 201
    assert await _records(region_router, "eu") == []
    [record] = await _records(region_router, "us")
    assert record.state is IdempotencyState.COMPLETED
    assert record.user_id == created.json()["id"]
    assert record.request_id == created.headers["x-request-id"]


async def test_a_client_error_is_kept_and_replayed(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    await api.post("/v1/users", json={"external_id": "dup", "region": "eu"})
    body = {"external_id": "dup", "region": "eu"}
    conflict = await api.post("/v1/users", json=body, headers=_key("dup-again"))
    first = assert_problem(conflict, 409, "conflict")
    replay = await api.post("/v1/users", json=body, headers=_key("dup-again"))
    assert replay.status_code == 409
    again = replay.json()
    # The original problem, but naming the retry's request id (RFC 9457 §3.2), as its
    # X-Request-Id header does; the first request's id is in the replay's log line.
    assert again.pop("request_id") == replay.headers["x-request-id"] != first["request_id"]
    assert again == {k: v for k, v in first.items() if k != "request_id"}
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["content-type"] == "application/problem+json"


async def test_a_server_error_is_not_kept_so_the_retry_does_the_work(
    api: httpx.AsyncClient, make_linked: LinkFactory, region_router: RegionRouter,
) -> None:
    linked = await make_linked("eu")
    path = f"/v1/connections/{linked.connection.id}/sync"
    assert_problem(await api.post(path, headers=_key("sync-1")), 501)  # no sync job here
    assert await _records(region_router) == []
    again = await api.post(path, headers=_key("sync-1"))
    assert again.status_code == 501
    assert "idempotent-replayed" not in again.headers


# -- refusals --------------------------------------------------------------------


async def test_the_same_key_with_another_body_is_a_422(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    first = await api.post("/v1/users", json={"external_id": "one", "region": "eu"},
                           headers=_key("reused"))
    assert first.status_code == 201
    other = await api.post("/v1/users", json={"external_id": "two", "region": "eu"},
                           headers=_key("reused"))
    body = assert_problem(other, 422, "idempotency_key_reused")
    assert "Idempotency-Key" in body["detail"]
    assert await count_rows(region_router, User) == {"eu": 1, "us": 0}


async def test_the_same_key_on_another_path_is_a_422(
    api: httpx.AsyncClient, make_linked: LinkFactory, services: Services,
) -> None:
    install(services, public_url=GATEWAY)  # link URLs off loopback need public_url
    linked = await make_linked("eu")
    session = await api.post("/v1/link/sessions", json={
        "user_id": linked.user.id, "redirect_uri": REDIRECT}, headers=_key("k"))
    assert session.status_code == 201, session.text
    other = await api.post("/v1/users", json={"external_id": "x", "region": "eu"},
                           headers=_key("k"))
    assert_problem(other, 422, "idempotency_key_reused")


@pytest.mark.parametrize("headers", [
    [("Idempotency-Key", "x" * 256)],
    [("Idempotency-Key", "")],
    [("Idempotency-Key", "caf\u00e9")],
    [("Idempotency-Key", "tab\there")],
    [("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    [("Idempotency-Key", '"unterminated \\x"')],
], ids=["too-long", "empty", "non-ascii", "control", "twice", "bad-sf-string"])
async def test_a_malformed_key_is_a_400_naming_the_header(
    api: httpx.AsyncClient, region_router: RegionRouter, headers: list[tuple[str, str]],
) -> None:
    request = api.build_request("POST", "/v1/users", json={"external_id": "x", "region": "eu"})
    request.headers.pop("Idempotency-Key", None)
    raw = [(k.encode(), v.encode("utf-8")) for k, v in headers]
    request.headers = httpx.Headers(list(request.headers.raw) + raw)
    body = assert_problem(await api.send(request), 400, "invalid_idempotency_key")
    assert body["errors"][0]["parameter"] == "Idempotency-Key"
    assert await count_rows(region_router, User) == {"eu": 0, "us": 0}


async def test_a_structured_field_string_is_the_same_key_as_its_bare_text(
    api: httpx.AsyncClient,
) -> None:
    body = {"external_id": "sf", "region": "eu"}
    first = await api.post("/v1/users", json=body, headers=_key('"8e03-40d5"'))
    again = await api.post("/v1/users", json=body, headers=_key("8e03-40d5"))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"


async def test_a_key_in_progress_is_a_409_with_retry_after_until_its_lock_expires(
    api: httpx.AsyncClient, services: Services, region_router: RegionRouter,
    custody: dict[str, RegionCustody], app_id: ApplicationId,
) -> None:
    # Another request claimed the key and is still working (or crashed while working).
    body = b'{"external_id":"slow","region":"eu"}'
    hasher = custody["eu"].hasher
    held = await store_of(services).claim(
        "eu", app_id, key_digest(hasher, app_id, "held"),
        fingerprint(hasher, app_id, "POST", "/v1/users", "", body.decode()),
        request_id="req_first",
    )
    assert isinstance(held, Claimed)
    headers = {**_key("held"), "Content-Type": "application/json"}
    busy = await api.post("/v1/users", content=body, headers=headers)
    assert_problem(busy, 409, "idempotency_key_in_use")
    assert busy.headers["retry-after"] == "1"
    assert await count_rows(region_router, User) == {"eu": 0, "us": 0}

    # The first request crashed: once its lock expires, a retry takes the claim over.
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(_keys).values(locked_until=utcnow() - timedelta(1)))
    taken = await api.post("/v1/users", content=body, headers=headers)
    assert taken.status_code == 201, taken.text
    assert "idempotent-replayed" not in taken.headers
    # The crashed request, should it come back, can no longer store an answer.
    assert not await store_of(services).complete(
        held, StoredResponse(201, (), b"late", "req_first"))
    replay = await api.post("/v1/users", content=body, headers=headers)
    assert replay.content == taken.content
    assert await count_rows(region_router, User) == {"eu": 1, "us": 0}



def _key_outcomes(exposition: str) -> dict[str, float]:
    found = {}
    for line in exposition.splitlines():
        if line.startswith("aggregator_idempotency_keys_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('"')[1]] = float(value)
    return found


async def test_replays_and_refusals_are_counted_on_metrics(
    api: httpx.AsyncClient, services: Services, custody: dict[str, RegionCustody],
    app_id: ApplicationId, make_app: AppFactory,
) -> None:
    make_app()  # a second app in the process: its own registry, no duplicate series
    assert _key_outcomes((await api.get("/metrics")).text) == {
        "replayed": 0.0, "in_use": 0.0, "reused": 0.0}
    body = {"external_id": "counted", "region": "eu"}
    assert (await api.post("/v1/users", json=body, headers=_key("c-1"))).status_code == 201
    for _ in range(2):
        replay = await api.post("/v1/users", json=body, headers=_key("c-1"))
        assert replay.headers["idempotent-replayed"] == "true"
    other = await api.post("/v1/users", json={**body, "external_id": "x"}, headers=_key("c-1"))
    assert_problem(other, 422, "idempotency_key_reused")
    hasher = custody["eu"].hasher
    raw = b'{"external_id":"busy","region":"eu"}'
    held = await store_of(services).claim(
        "eu", app_id, key_digest(hasher, app_id, "c-2"),
        fingerprint(hasher, app_id, "POST", "/v1/users", "", raw.decode()), request_id="r")
    assert isinstance(held, Claimed)
    busy = await api.post("/v1/users", content=raw,
                          headers={**_key("c-2"), "Content-Type": "application/json"})
    assert_problem(busy, 409, "idempotency_key_in_use")

    assert _key_outcomes((await api.get("/metrics")).text) == {
        "replayed": 2.0, "in_use": 1.0, "reused": 1.0}


# -- scope and expiry ------------------------------------------------------------


async def test_two_applications_with_the_same_key_are_independent(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    body = {"external_id": "same", "region": "eu"}
    mine = await api.post("/v1/users", json=body, headers=_key("shared-key"))
    theirs = await other_api.post("/v1/users", json=body, headers=_key("shared-key"))
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert await count_rows(region_router, User) == {"eu": 2, "us": 0}


async def test_an_expired_key_can_be_used_again_and_is_purged(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    first = await api.post("/v1/users", json={"external_id": "old", "region": "eu"},
                           headers=_key("daily"))
    assert first.status_code == 201
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(_keys).values(expires_at=utcnow() - timedelta(seconds=1)))

    reused = await api.post("/v1/users", json={"external_id": "new", "region": "eu"},
                            headers=_key("daily"))
    assert reused.status_code == 201, reused.text
    assert "idempotent-replayed" not in reused.headers
    assert await count_rows(region_router, User) == {"eu": 2, "us": 0}

    later = utcnow() + timedelta(hours=25)
    assert await purge_expired(region_router, "eu", now=later, limit=1) == 1
    assert await purge_expired(region_router, "eu", now=later) == 0
    assert await _records(region_router) == []


# -- concurrency (real sockets) --------------------------------------------------


async def _burst(client: httpx.AsyncClient, method: str, path: str, key: str,
                 body: dict[str, str] | None = None, n: int = 8) -> list[httpx.Response]:
    async def one() -> httpx.Response:
        return await client.request(method, path, json=body, headers=_key(key))
    return list(await asyncio.gather(*(one() for _ in range(n))))


def _check_burst(answers: list[httpx.Response], status: int) -> None:
    """Exactly one answer did the work; every other one replayed it or was told to wait."""
    worked = [a for a in answers if a.status_code == status
              and "idempotent-replayed" not in a.headers]
    assert len(worked) == 1, [(a.status_code, a.text[:80]) for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "idempotency_key_in_use")
            assert answer.headers["retry-after"]
        else:
            assert answer.status_code == status
            assert answer.content == worked[0].content


async def test_concurrent_requests_with_one_key_create_one_user(
    served: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    body = {"external_id": "burst", "region": "eu"}
    _check_burst(await _burst(served, "POST", "/v1/users", "burst-user", body), 201)
    assert await count_rows(region_router, User) == {"eu": 1, "us": 0}
    assert await _user_created_events(region_router) == 1


async def test_concurrent_requests_with_one_key_create_one_link_session(
    served: httpx.AsyncClient, region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    body = {"user_id": linked.user.id, "redirect_uri": REDIRECT}
    _check_burst(await _burst(served, "POST", "/v1/link/sessions", "burst-link", body), 201)
    assert await count_rows(region_router, LinkSession) == {"eu": 1, "us": 0}


async def test_concurrent_deletes_with_one_key_make_one_erasure_request(
    served: httpx.AsyncClient, region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    answers = await _burst(served, "DELETE", f"/v1/users/{linked.user.id}", "burst-erase")
    _check_burst(answers, 202)
    assert await count_rows(region_router, ErasureRequest) == {"eu": 1, "us": 0}


# -- what is stored --------------------------------------------------------------


async def test_secrets_and_personal_data_in_answers_are_never_stored_in_clear(
    api: httpx.AsyncClient, make_linked: LinkFactory, region_router: RegionRouter,
    backend: Backend, raw_files: Any, services: Services,
) -> None:
    install(services, public_url=GATEWAY)
    configured = await api.put("/v1/webhook-endpoint",
                               json={"url": "https://hooks.example.com/events"})
    assert configured.status_code == 200, configured.text
    rotated = await api.post("/v1/webhook-endpoint/rotate", headers=_key("rotate-1"))
    secret = rotated.json()["secret"]
    assert secret.startswith("whsec_")
    replay = await api.post("/v1/webhook-endpoint/rotate", headers=_key("rotate-1"))
    assert replay.json()["secret"] == secret  # shown again only to the app, by its key

    linked = await make_linked("eu")
    session = await api.post("/v1/link/sessions", json={
        "user_id": linked.user.id, "redirect_uri": REDIRECT}, headers=_key("link-1"))
    assert session.status_code == 201, session.text
    token = session.json()["link_token"]
    created = await api.post("/v1/users", json={
        "external_id": "jane.doe@example.test", "region": "eu"}, headers=_key("user-1"))
    assert created.status_code == 201

    needles = [secret, token, "jane.doe@example.test", "rotate-1", "link-1", "user-1"]
    rows = await _records(region_router)
    assert len(rows) == 3
    for row in rows:
        for value in row:
            text = bytes(value).decode("latin-1") if isinstance(value, bytes | memoryview) \
                else str(value)
            assert not [n for n in needles if n in text], row
    if backend.name == "sqlite":
        for path, data in raw_files():
            for needle in needles:
                assert needle.encode() not in data, path


async def test_erasing_the_user_deletes_the_records_about_them_but_not_its_own(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    created = await api.post("/v1/users", json={"external_id": "gone", "region": "eu"},
                             headers=_key("make-gone"))
    user_id = created.json()["id"]
    [made] = await _records(region_router)
    assert made.user_id == user_id
    erased = await api.delete(f"/v1/users/{user_id}", headers=_key("erase-gone"))
    assert erased.status_code == 202
    # The erasure ran in the background of that response and took the creation's
    # record with the user's other rows; the erasure's own record names no user.
    [left] = await _records(region_router)
    assert left.user_id is None
    assert left.status == 202
    again = await api.delete(f"/v1/users/{user_id}", headers=_key("erase-gone"))
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == erased.content
    assert await count_rows(region_router, ErasureRequest) == {"eu": 1, "us": 0}


async def test_a_backup_of_an_answer_about_a_user_does_not_open_after_erasure(
    api: httpx.AsyncClient, region_router: RegionRouter, custody: dict[str, RegionCustody],
    app_id: ApplicationId,
) -> None:
    created = await api.post("/v1/users", json={
        "external_id": "erika@example.test", "region": "eu"}, headers=_key("make-erika"))
    user_id = created.json()["id"]
    again = await api.post("/v1/users", json={
        "external_id": "erika@example.test", "region": "eu"}, headers=_key("make-erika"))
    assert again.headers["idempotent-replayed"] == "true"  # it opens while the user lives
    assert again.json()["external_id"] == "erika@example.test"
    [backup] = await _records(region_router)  # a copy of the row, as a backup holds it
    assert backup.user_id == user_id
    assert backup.response_sealed is None  # nothing under the pepper-derived key
    assert backup.response_user_sealed is not None

    keys = custody["eu"]
    place = user_place(app_id, backup.key_digest, backup.fingerprint, user_id)
    async with region_router.reader("eu") as session:
        key = await keys.data_keys.load(session, user_id)
    opened = await keys.sealer.open(key, place, bytes(backup.response_user_sealed))
    assert b"erika@example.test" in opened  # sealed under the user's data key alone

    erased = await api.delete(f"/v1/users/{user_id}")
    assert erased.status_code == 202
    async with region_router.reader("eu") as session:
        with pytest.raises(DataKeyDestroyed):  # the only key it was sealed under is gone
            await keys.data_keys.load(session, user_id)


async def test_the_store_is_built_once_per_process(api: httpx.AsyncClient,
                                                   services: Services) -> None:
    await api.post("/v1/users", json={"external_id": "s", "region": "eu"}, headers=_key("s"))
    store = services.extra[STORE_KEY]
    await api.post("/v1/users", json={"external_id": "t", "region": "eu"}, headers=_key("t"))
    assert services.extra[STORE_KEY] is store


# -- documentation ---------------------------------------------------------------


async def test_openapi_documents_the_header_on_the_operations_that_take_it(
    api: httpx.AsyncClient,
) -> None:
    document = (await api.get("/openapi.json")).json()
    taking = {(path, method) for path, item in document["paths"].items()
              for method, op in item.items()
              if any(p["name"] == "Idempotency-Key" for p in op["parameters"])}
    assert taking == {
        ("/v1/users", "post"), ("/v1/users/{id}", "delete"), ("/v1/link/sessions", "post"),
        ("/v1/connections/{id}/sync", "post"), ("/v1/webhook-endpoint/rotate", "post"),
        ("/v1/events/{id}/redeliver", "post"), ("/v1/plaid/exchange", "post"),
    }
    create = document["paths"]["/v1/users"]["post"]
    [param] = [p for p in create["parameters"] if p["name"] == "Idempotency-Key"]
    assert param["in"] == "header"
    assert param["schema"]["maxLength"] == 255
    assert {"400", "409", "422"} <= set(create["responses"])
    assert "Idempotent-Replayed" in create["responses"]["201"]["headers"]
    for problem in ("invalid_idempotency_key", "idempotency_key_reused",
                    "idempotency_key_in_use"):
        assert (await api.get(f"/problems/{problem}")).status_code == 200


async def test_the_worker_purge_deletes_expired_keys_in_every_region(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    for region in ("eu", "us"):
        answer = await api.post("/v1/users", json={"external_id": "p", "region": region},
                                headers=_key(f"purge-{region}"))
        assert answer.status_code == 201
    async with region_router.session("eu") as session, session.begin():
        await session.execute(update(_keys).values(expires_at=utcnow() - timedelta(seconds=1)))
    job = IdempotencyPurge(region_router, batch=10)
    assert await job.run_once(asyncio.Event()) == 1  # eu's; us's is still fresh
    assert await _records(region_router, "eu") == []
    assert len(await _records(region_router, "us")) == 1


async def test_a_record_never_names_a_user_of_another_region(
    services: Services, custody: dict[str, RegionCustody], app_id: ApplicationId,
    region_router: RegionRouter,
) -> None:
    store = store_of(services)
    hasher = custody["eu"].hasher
    held = await store.claim("eu", app_id, key_digest(hasher, app_id, "r"),
                             fingerprint(hasher, app_id, "POST", "/v1/users", "", "{}"),
                             request_id="req_r")
    assert isinstance(held, Claimed)
    with pytest.raises(ResidencyViolation):
        await store.complete(held, StoredResponse(201, (), b"{}", "req_r"),
                             UserId("usr_us_" + "a" * 26))
    [record] = await _records(region_router)
    assert record.state is IdempotencyState.IN_PROGRESS
