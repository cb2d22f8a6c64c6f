"""Serving the app with uvicorn, on a socket bound by us.

Binding the socket ourselves does two things uvicorn's own ``--host/--port`` does not:
the caller learns the real port (``port=0`` picks a free one), and the listener is
created with an explicit ``IPPROTO_TCP``, which is what makes asyncio set
``TCP_NODELAY`` on every accepted connection; without it each keep-alive request
stalls ~40 ms on Nagle + delayed ACK (uvicorn issue 3149; docs/architecture.md,
"Performance notes").
One process serves one core; to use more, start one process per core with
``--reuse-port`` (``SO_REUSEPORT``) rather than uvicorn's ``--workers``.

uvicorn picks ``httptools`` when it is installed and ``h11`` otherwise (``http="auto"``);
we measured httptools at about 2.7 times h11 on one core (docs/architecture.md,
"Performance notes"). Its access log stays off: our
:class:`~aggregator.http.middleware.AccessLogMiddleware` logs route templates, while
uvicorn's would print raw paths (a Link page path holds a bearer token). Its proxy-header
handling is off too: see :func:`server_config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
from collections.abc import AsyncIterator, Generator

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 5.0


def http_implementation() -> str:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server_config(app: ASGIApp) -> uvicorn.Config:
    """How the gateway runs under uvicorn; the app's services are opened by the caller."""
    return uvicorn.Config(
        app,
        http=http_implementation(),
        lifespan="off",
        log_config=None,  # logging is ours (JSON, redacted); uvicorn must not rewire it
        access_log=False,
        server_header=False,
        # uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 and rewrite the
        # client address before the app sees it, whatever [rate_limits] trusted_proxies
        # says: a client behind a local proxy could then pick its own address (new rate
        # limit buckets at will, a forged address in the audit trail). The gateway's own
        # parser (aggregator.http.ratelimit.clientip) is the only reader of that header.
        proxy_headers=False,
        forwarded_allow_ips="",
        timeout_graceful_shutdown=10,
    )


async def serve_forever(app: ASGIApp, sock: socket.socket) -> None:
    """Serve until SIGINT or SIGTERM (uvicorn's handlers, main thread only)."""
    await uvicorn.Server(server_config(app)).serve(sockets=[sock])


class _QuietServer(uvicorn.Server):
    """Leaves signals to the host process: for serving inside tests or embedders."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, sock: socket.socket) -> AsyncIterator[str]:
    """Serve ``app`` on ``sock`` while the block runs; yields the base URL."""
    server = _QuietServer(server_config(app))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="gateway-server")
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the gateway server stopped during start-up")
                await asyncio.sleep(0.005)
        yield base_url(sock)
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_TIMEOUT)
        except TimeoutError:
            log.warning("gateway server did not stop in %.0f s; cancelling", SHUTDOWN_TIMEOUT)
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            sock.close()
