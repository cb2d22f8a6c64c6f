"""Running an ASGI app under uvicorn inside the caller's event loop, on loopback only.

The socket is bound before uvicorn starts so the caller learns the real port (``port=0``
picks a free one) and the issuer can equal the base URL from the first request on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.types import ASGIApp

from aggregator.errors import ConfigError
from aggregator.http.serving import bind

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 5.0


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers (the host process owns SIGINT and SIGTERM)
    and with a prompt stop: :meth:`stop` wakes the main loop instead of letting it find
    ``should_exit`` on its next 0.1 s poll, which adds up over a test suite."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        # on_tick(0) refreshes the Date header and reports whether to exit.
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)


def bind_loopback(host: str, port: int) -> socket.socket:
    """A listening TCP socket on a loopback address; anything else is refused.

    The sandbox publishes its test passwords and dev-client secret: it must not be
    reachable from another machine.
    """
    address = "127.0.0.1" if host == "localhost" else host
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"sandbox: host {host!r} is not a loopback address") from None
    if not ip.is_loopback:
        raise ConfigError(f"sandbox: host {host!r} is not a loopback address")
    # The gateway's own binder sets IPPROTO_TCP, which keeps keep-alive requests off the
    # Nagle + delayed-ACK stall (docs/architecture.md, "Performance notes").
    return bind(address, port)


@contextlib.asynccontextmanager
async def serve_on(
    app: ASGIApp, sock: socket.socket, *, own_logging: bool = False
) -> AsyncIterator[None]:
    """Serve ``app`` on ``sock`` until the block exits, then stop within a bounded time.

    Embedded (the default) uvicorn leaves the process's logging alone: its default
    ``log_config`` would rewire it, and ``access_log=False`` would switch off
    propagation of ``uvicorn.access`` for everyone. Access lines then go, at INFO, to
    whatever the host configured; no URL of ours carries a credential.
    ``own_logging=True`` (the CLI) installs uvicorn's console logging instead.
    """
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
        log_level="info" if own_logging else None,
        access_log=True,
        timeout_graceful_shutdown=1,
        timeout_keep_alive=2,
    )
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="sandbox-bank")
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()  # re-raises the start-up failure
                    raise RuntimeError("sandbox server stopped during start-up")
                await asyncio.sleep(0.005)
        yield
    finally:
        server.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_TIMEOUT)
        except TimeoutError:
            log.warning("sandbox server did not stop in %.0f s; cancelling", SHUTDOWN_TIMEOUT)
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            sock.close()
