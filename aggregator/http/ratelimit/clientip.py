"""The client address a per-address bucket is charged to.

The socket peer, unless the peer is a configured trusted proxy
(``[rate_limits] trusted_proxies``): then ``X-Forwarded-For`` is read from the right,
skipping trusted proxies, and the first address not among them is the client. Entries
left of it were written by the client itself and are never believed: a client that
could choose its address would get a fresh bucket per request (the spoofing attack the
setting exists to prevent). Without trusted proxies the header is ignored entirely.

An IPv6 client is charged per /64: one subscriber or host usually holds a whole /64, so
per-address buckets would hand an attacker 2**64 of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

from starlette.datastructures import Headers
from starlette.types import Scope

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
