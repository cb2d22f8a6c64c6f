"""The client address a per-address bucket is charged to.

The socket peer, unless the peer is a configured trusted proxy
(``[rate_limits] trusted_proxies``): then ``X-Forwarded-For`` is read from the right,
skipping trusted proxies, and the first address not among them is the client. Entries
left of it were written by the client itself and are never believed: a client that
could choose its address would get a fresh bucket per request (the spoofing attack the
setting exists to prevent). Without trusted proxies the header is ignored entirely.

An IPv6 client is charged per /64: one subscriber or host usually holds a whole /64, so
per-address buckets would hand an attacker 2**64 of them.

This parser is the gateway's only reader of ``X-Forwarded-For`` (uvicorn's own proxy
handling is off, :func:`aggregator.http.serving.server_config`):
:class:`ClientAddressMiddleware` runs it once per request and leaves the answer in the
request state, where the rate limiter, the audit trail and the request-id middleware read
it.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from aggregator.settings import IPNetwork

IPAddress = IPv4Address | IPv6Address
_MAX_HOPS = 32  # a longer chain is someone padding the header; stop reading it


def _parse(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443" (RFC 7239 style)
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        return ip_address(text)
    except ValueError:
        return None


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_address(scope: Scope, proxies: Sequence[IPNetwork]) -> IPAddress | None:
    """The client's address (see the module docstring); ``None`` if there is none."""
    peer = scope.get("client")
    address = _parse(str(peer[0])) if peer else None
    if address is None or not proxies or not _trusted(address, proxies):
        return address
    hops = [h for value in Headers(scope=scope).getlist("x-forwarded-for")
            for h in value.split(",")]
    for hop in reversed(hops[-_MAX_HOPS:]):
        parsed = _parse(hop)
        if parsed is None:
            return address  # garbage written by a hop we trust least: stop at the last good one
        address = parsed
        if not _trusted(address, proxies):
            return address
    return address


def subject_of(address: IPAddress) -> str:
    """What a per-address bucket is keyed on: the address, or its /64 for IPv6."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(IPv6Network((address, 64), strict=False))
    return str(address)


#: Request-state keys set by :class:`ClientAddressMiddleware`.
CLIENT_ADDRESS = "client_address"
VIA_TRUSTED_PROXY = "via_trusted_proxy"


def peer_is_trusted(scope: Scope, proxies: Sequence[IPNetwork]) -> bool:
    """Whether the socket peer is one of ``proxies`` (so its forwarding headers count)."""
    peer = scope.get("client")
    address = _parse(str(peer[0])) if peer else None
    return address is not None and bool(proxies) and _trusted(address, proxies)


class ClientAddressMiddleware:
    """Stores the client's address (:func:`client_address`) in the request state, once.

    Also records whether the peer is a trusted proxy, so that other headers a proxy
    sets (``X-Request-Id``) are believed from it alone.
    """

    def __init__(self, app: ASGIApp, proxies: Sequence[IPNetwork]) -> None:
        self.app = app
        self.proxies = tuple(proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state: dict[str, object] = scope.setdefault("state", {})
            state[CLIENT_ADDRESS] = client_address(scope, self.proxies)
            state[VIA_TRUSTED_PROXY] = peer_is_trusted(scope, self.proxies)
        await self.app(scope, receive, send)
