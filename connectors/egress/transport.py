"""The httpx transport that enforces :class:`~connectors.egress.policy.EgressPolicy`.

Checking a URL's host and then letting the HTTP client resolve it again is a
time-of-check/time-of-use gap: a name with a short TTL answers a public address to the
check and 127.0.0.1 to the connect (DNS rebinding). So the name is resolved exactly once,
inside the network backend's ``connect_tcp``: every answer is checked, and the socket is
opened to a checked address. httpcore still sends the original host in ``Host`` and as
the TLS server name (SNI) and verifies the certificate against it, since only the
backend below the connection sees the IP.

Every request is also checked by URL before it is sent, redirects included (each hop is
a new request through this transport), and every response body is read through a
counter that stops at the policy's byte and time limits.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, Protocol

import anyio
import certifi
import httpcore
import httpx

from connectors.egress.policy import EgressPolicy
from connectors.egress.sharded import ShardedTransport
from connectors.errors import EgressRefused, ResponseTooLarge

__all__ = [
    "GuardedBackend",
    "GuardedTransport",
    "Resolver",
    "check_destination",
    "egress_client",
    "system_resolver",
]

class Resolver(Protocol):
    """Name resolution for the guarded backend: the IP addresses (text) of `host`, in
    the order to try them; :func:`system_resolver` asks the operating system. Tests
    inject their own to play a DNS server whose answer changes (rebinding)."""

    def __call__(self, host: str, port: int) -> Awaitable[Sequence[str]]: ...

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer (getaddrinfo), in its preference order, de-duplicated."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


async def check_destination(
    policy: EgressPolicy, url: str, resolver: Resolver | None = None
) -> None:
    """Check `url` now, DNS included: for registering a URL that is called later.

    Raises :class:`~connectors.errors.EgressRefused` when the URL, or any address its
    host resolves to today, is refused. A name that does not resolve at all passes: it
    may be set up before the first call, and every connection is checked again by
    :class:`GuardedBackend` anyway, so this check is for a clear early answer only.
    """
    policy.check_url(url)
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with anyio.fail_after(policy.connect_timeout):
            answers = await (resolver or system_resolver)(parsed.host, port)
    except (OSError, TimeoutError):
        return
    policy.check_addresses(parsed.host, answers)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every answer, connects to a checked address; see the module doc."""

    def __init__(
        self, policy: EgressPolicy, resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolver or system_resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 - httpcore's
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                answers = await self._resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("name resolution timed out") from exc
        except OSError as exc:  # socket.gaierror: the name does not resolve (now)
            raise httpcore.ConnectError(f"name resolution failed: {exc.strerror}") from exc
        addresses = self._policy.check_addresses(host, answers)
        failure: Exception | None = None
        for address in addresses:  # happy-eyeballs order as the resolver gave it
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # check_addresses returns at least one address
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("unix sockets are not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CappedStream(httpx.AsyncByteStream):
    """A response body that stops at `limit` bytes or after `deadline` seconds in total.

    httpx's read timeout bounds the gap between two chunks, not the whole body: a server
    dribbling a byte every few seconds would hold a worker forever (slow-read).
    """

    def __init__(self, inner: httpx.AsyncByteStream, limit: int, deadline: float) -> None:
        self._inner = inner
        self._limit = limit
        self._deadline = deadline

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen, ends = 0, time.monotonic() + self._deadline
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(f"the answer is longer than {self._limit} bytes")
            if time.monotonic() > ends:
                raise ResponseTooLarge(f"the answer took longer than {self._deadline:g} s")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own HTTP/1.1 transport over a :class:`GuardedBackend`, with limits."""

    def __init__(
        self, policy: EgressPolicy, *, ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver | None = None, limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        context = ssl_context or default_ssl_context()
        super().__init__(verify=context, limits=limits, retries=0)
        # httpx builds its pool with the default network backend and no way to pass
        # another; the pool is rebuilt with the same settings over the guarded backend
        # (httpx is pinned to 0.28; tests/connectors/egress prove the backend is used).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True, http2=False, retries=0,
            network_backend=GuardedBackend(policy, resolver),
        )
        self._policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._policy.check_url(request.url)  # every hop of a redirect comes through here
        response = await super().handle_async_request(request)
        limit = self._policy.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await response.aclose()
            raise ResponseTooLarge(f"the answer declares more than {limit} bytes")
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code, headers=response.headers,
            stream=_CappedStream(response.stream, limit, self._policy.total_timeout),
            extensions=response.extensions,
        )


def default_ssl_context() -> ssl.SSLContext:
    """Certificate verification against certifi's roots, as httpx does by default."""
    return ssl.create_default_context(cafile=certifi.where())


def egress_client(
    policy: EgressPolicy, *, ssl_context: ssl.SSLContext | None = None,
    resolver: Resolver | None = None, limits: httpx.Limits = DEFAULT_LIMITS,
    sharded: bool = False, **options: Any,
) -> httpx.AsyncClient:
    """The one way the gateway builds an outbound ``httpx.AsyncClient``.

    Redirects are not followed (a caller that wants them passes ``follow_redirects``
    per request, and each hop is checked again); proxies and ``.netrc`` from the
    environment are ignored (a proxy would connect on our behalf, past the address
    check). `options` are further ``httpx.AsyncClient`` arguments (``event_hooks``,
    ``base_url``, ``headers``, ``timeout``). ``sharded`` spreads ``limits.max_connections``
    over several small guarded pools (:mod:`connectors.egress.sharded`: cheaper per request
    for a client with many connections in flight, like the refresh worker's).
    """
    options.setdefault("timeout", policy.httpx_timeout)

    def guarded(pool: httpx.Limits) -> GuardedTransport:
        return GuardedTransport(policy, ssl_context=ssl_context, resolver=resolver, limits=pool)

    transport: httpx.AsyncBaseTransport = (
        ShardedTransport(limits.max_connections or 1, guarded) if sharded else guarded(limits)
    )
    return httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False, **options,
    )
