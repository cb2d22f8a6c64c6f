"""A webhook receiver on a real loopback socket, and helpers to emit events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from aggregator.events import emit
from aggregator.ids import ApplicationId, OutboundEventId, new_id
from aggregator.store import RegionRouter


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers ``fail`` requests with 500 (or ``status``), then 200; records every one."""

    fail: int = 0
    status: int = 500
    extra_headers: str = ""
    requests: list[Received] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {k.strip().lower(): v.strip()
                   for k, v in (line.split(":", 1) for line in lines if ":" in line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Received(headers, body))
        status = self.status if len(self.requests) <= self.fail else 200
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n{self.extra_headers}"
                     "connection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    found.url = f"http://127.0.0.1:{port}/hooks"
    yield found
    server.close()
    await server.wait_closed()


Emit = Callable[..., Awaitable[OutboundEventId]]


@pytest.fixture
def emit_erased(region_router: RegionRouter, app_id: ApplicationId) -> Emit:
    """``await emit_erased("eu")``: a committed ``user.erased`` event (no user row needed)."""

    async def make(region: str = "eu", app: ApplicationId | None = None) -> OutboundEventId:
        async with region_router.session(region) as session, session.begin():
            return await emit(session, app or app_id, "user.erased", {
                "erasure_request_id": new_id("era", region), "status": "completed",
            })

    return make
