"""The gateway under uvicorn on a real loopback socket, as `aggregator serve` runs it."""

from __future__ import annotations

import socket
import time

import httpx

from aggregator.http.serving import bind, serving
from aggregator.http.views import UserOut
from tests.aggregator._logs import LogLines
from tests.aggregator.http._helpers import assert_problem, parsed
from tests.aggregator.http.conftest import AppFactory


async def test_the_api_over_a_real_socket(
    make_app: AppFactory, api_key: str, log_lines: LogLines
) -> None:
    sock = bind("127.0.0.1", 0)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    async with serving(make_app(), sock) as base_url, httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}
    ) as client:
        created = await client.post("/v1/users", json={"external_id": "a", "region": "eu"})
        user = parsed(UserOut, created, 201)
        started = time.perf_counter()
        for _ in range(5):  # keep-alive requests on one connection, TCP_NODELAY set
            assert (await client.get(f"/v1/users/{user.id}")).status_code == 200
        assert time.perf_counter() - started < 1.0  # ~40 ms each without TCP_NODELAY

        too_big = await client.post("/v1/users", content=b"{" + b" " * 70_000 + b"}",
                                    headers={"Content-Type": "application/json"})
        assert_problem(too_big, 413, "content_too_large")
        assert_problem(await client.get("/v1/nothing"), 404, "not_found")
        assert "server" not in created.headers  # no version banner

    lines = log_lines()
    access = [line for line in lines if line["logger"] == "aggregator.http"]
    assert {line["request_id"] for line in access} >= {created.headers["x-request-id"]}
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    assert all(user.id not in line["message"] for line in access)  # templates, not paths
