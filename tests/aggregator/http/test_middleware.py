"""Request ids, problem documents for the router's errors, crashes, and JSON logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from ipaddress import ip_network

import httpx
import pytest

from aggregator.http import ApiRoute, Call, Operation
from aggregator.http.app import create_app
from aggregator.http.views import Health
from aggregator.ids import is_request_id
from aggregator.settings import Settings
from connectors import BankUnavailable
from tests.aggregator._logs import LogLines
from tests.aggregator.http._helpers import assert_problem
from tests.aggregator.http.conftest import GATEWAY

log = logging.getLogger("aggregator.tests")


async def crash(call: Call) -> Health:
    raise RuntimeError("internal state: password=hunter2 at /srv/app/secret.py")


async def busy_bank(call: Call) -> Health:
    raise BankUnavailable("bank sandbox answered 503", retry_after=7.2)


async def chatty(call: Call) -> Health:
    log.info("in the handler")
    await asyncio.to_thread(log.info, "in a worker thread")
    return Health("ok")


def route(path: str, handler: object) -> ApiRoute:
    return ApiRoute(path, handler, "GET", Operation(  # type: ignore[arg-type]
        summary=path, response=Health, auth=False))


@pytest.fixture
async def client(bare_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    # Behind a trusted proxy (the ASGI transport's peer is 127.0.0.1): only from one is
    # an inbound request id believed at all (test_client_address covers everyone else).
    proxied = replace(bare_settings, rate_limits=replace(
        bare_settings.rate_limits, trusted_proxies=(ip_network("127.0.0.0/8"),)))
    app = create_app(proxied, routes=[
        route("/test/crash", crash), route("/test/bank", busy_bank), route("/test/log", chatty),
    ])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=GATEWAY) as client:
        yield client


async def test_every_response_carries_a_fresh_request_id(client: httpx.AsyncClient) -> None:
    ids = {(await client.get(path)).headers["x-request-id"]
           for path in ("/healthz", "/healthz", "/nowhere", "/test/crash")}
    assert len(ids) == 4
    assert all(i.startswith("req_") and is_request_id(i) for i in ids)


async def test_answers_are_never_cached_or_sniffed(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/nowhere", "/test/crash"):
        response = await client.get(path)
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("given", "kept"), [
    ("0b6f2c1e-9a43-4f7e-8d1c-6c1f3f0e9a21", True),
    ("req_" + "a" * 26, True),
    ("hello\r\nX-Evil: 1", False),
    ("x" * 200, False),
    ("../../etc/passwd", False),
])
async def test_a_sane_inbound_request_id_is_kept_and_anything_else_replaced(
    client: httpx.AsyncClient, given: str, kept: bool
) -> None:
    try:
        response = await client.get("/healthz", headers={"X-Request-Id": given})
    except httpx.LocalProtocolError:
        return  # httpx itself refuses to send a header with a line break
    assert (response.headers["x-request-id"] == given) is kept
    assert is_request_id(response.headers["x-request-id"])


async def test_unknown_routes_and_methods_are_problems(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/v2/anything"), 404, "not_found")
    assert body["instance"] == "/v2/anything"
    # RFC 9457 §3.1.5: a URI reference, so the decoded path is percent-encoded again.
    odd = assert_problem(await client.get("/v2/a%20b/%C3%A9%07"), 404, "not_found")
    assert odd["instance"] == "/v2/a%20b/%C3%A9%07"
    response = await client.put("/v1/connections/con_eu_x")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET, HEAD"
    assert_problem(await client.post("/healthz"), 405)


async def test_a_crash_is_a_500_that_reveals_nothing_but_is_logged(
    client: httpx.AsyncClient, log_lines: LogLines
) -> None:
    response = await client.get("/test/crash")
    body = assert_problem(response, 500, "internal_error")
    for leak in ("hunter2", "RuntimeError", "secret.py", "Traceback"):
        assert leak not in response.text
    assert set(body) == {"type", "title", "status", "detail", "instance", "request_id"}
    (error,) = [line for line in log_lines() if line["level"] == "error"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert "RuntimeError" in error["exception"]
    assert "hunter2" not in error["exception"]  # redacted: password=[REDACTED]


async def test_mapped_upstream_errors_say_what_happened_and_when_to_retry(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/test/bank")
    body = assert_problem(response, 503, "bank_unavailable")
    assert body["detail"] == "bank sandbox answered 503"
    assert response.headers["retry-after"] == "7"


async def test_every_log_line_of_a_request_names_it(
    client: httpx.AsyncClient, log_lines: LogLines
) -> None:
    response = await client.get("/test/log")
    request_id = response.headers["x-request-id"]
    lines = [line for line in log_lines() if line["request_id"] == request_id]
    assert [line["message"] for line in lines] == [
        "in the handler", "in a worker thread", "GET /test/log 200",
    ]
    access = lines[-1]
    assert (access["route"], access["status"], access["method"]) == ("/test/log", 200, "GET")
    assert access["duration_ms"] >= 0
    outside = {line["logger"] for line in log_lines() if line["request_id"] is None}
    assert outside <= {"httpx"}  # only the test's own client logs outside the request
