"""An httpx transport that spreads requests over several small connection pools.

httpcore's pool re-examines every pooled connection twice per request (on the way in and
when the response closes): ``has_expired`` asks each idle socket for its peer name and
whether it is readable, two system calls per connection. Its cost grows with the pool,
so one pool of 16 keep-alive connections spent about a fifth of a refresh worker's CPU
on that bookkeeping (docs/architecture.md, "Performance notes"; upstream httpx 3215, httpcore 1035).
Several pools of four keep the same concurrency at a quarter of that cost.

Each request goes to the pool with the fewest requests in flight (a request counts until
its response is closed), so no pool queues while another idles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

#: Builds one shard's transport for the given pool limits.
ShardFactory = Callable[[httpx.Limits], httpx.AsyncBaseTransport]


def _plain(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(limits=limits)

#: Connections per shard: small enough that the per-request scan stays cheap.
SHARD_CONNECTIONS = 4


class ShardedTransport(httpx.AsyncBaseTransport):
    """``max_connections`` spread over pools of :data:`SHARD_CONNECTIONS`; see the module doc.

    ``make`` builds each shard (the gateway passes the egress policy's guarded transport,
    :func:`~connectors.egress.transport.egress_client` with ``sharded=True``). Example::

        http = httpx.AsyncClient(transport=ShardedTransport(max_connections=16))
    """

    def __init__(self, max_connections: int, make: ShardFactory = _plain) -> None:
        shards = max(1, -(-max_connections // SHARD_CONNECTIONS))
        per = -(-max_connections // shards)
        limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
        self._shards = [make(limits) for _ in range(shards)]
        self._active = [0] * shards

    @property
    def shards(self) -> int:
        return len(self._shards)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self._shards)), key=self._active.__getitem__)
        self._active[index] += 1
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            self._active[index] -= 1
            raise
        response.stream = _Released(response.stream, lambda: self._release(index))
        return response

    def _release(self, index: int) -> None:
        self._active[index] -= 1

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


class _Released(httpx.AsyncByteStream):
    """The shard's response stream; closing it frees the request's place in the count."""

    def __init__(self, stream: httpx.AsyncByteStream | httpx.SyncByteStream,
                 release: Callable[[], None]) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
