"""A plain HTTP/1.1 server on a real 127.0.0.1 socket that records every connection."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

Reply = Callable[[str, dict[str, str], asyncio.StreamWriter], Awaitable[None]]


async def ok(path: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
    body = f"host={headers.get('host', '')}".encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)


@dataclass
class Server:
    """Counts TCP connections and records request lines and headers; `reply` answers."""

    reply: Reply = ok
    connections: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        self.requests.append((lines[0], headers))
        await self.reply(lines[0].split()[1], headers, writer)
        await writer.drain()


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    """``await serve(reply=..., ssl=context)``: a started server bound to 127.0.0.1."""
    servers: list[asyncio.Server] = []
    started: list[Server] = []

    async def start(reply: Reply = ok, ssl: ssl.SSLContext | None = None) -> Server:
        found = Server(reply)
        server = await asyncio.start_server(found.handle, "127.0.0.1", 0, ssl=ssl)
        found.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        started.append(found)
        return found

    yield start
    for found in started:  # a handler still dribbling an answer the client gave up on
        for task in list(found.handlers):
            task.cancel()
        await asyncio.gather(*found.handlers, return_exceptions=True)
    for server in servers:
        server.close()
        await server.wait_closed()
