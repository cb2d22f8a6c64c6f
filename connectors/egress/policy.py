"""Where the gateway may send a request: the one outbound (egress) policy.

Every URL the gateway calls comes from configuration (bank profiles, discovery documents,
Plaid's host) or from an application (its event endpoint). Any of them could name an
address inside our own network: the cloud metadata service at 169.254.169.254, a database
on 10.0.0.5, an admin port on 127.0.0.1. That is server-side request forgery (OWASP
SSRF Prevention Cheat Sheet; CWE-918). The policy answers two questions:

- :meth:`EgressPolicy.url_problem`: may this URL be requested at all? ``https`` only, or
  ``http`` to a loopback host when the operator opted in for development; no userinfo;
  a host literal written in any spelling the C resolver accepts (``2130706433``,
  ``0177.0.0.1``, ``0x7f.1``, ``[::ffff:127.0.0.1]``) is normalised and judged as the
  address it is.
- :meth:`EgressPolicy.address_problem`: may we open a connection to this resolved
  address? Never link-local (the metadata service), private, shared, reserved,
  multicast or unspecified (tables pinned here, not the interpreter's); loopback only
  with ``allow_http_loopback``; IPv4 addresses embedded in IPv6 (mapped, compatible,
  6to4, Teredo, NAT64) are judged as the IPv4 address, before any exemption.
  Operator-listed networks and hosts are the exceptions.

The address check runs after DNS resolution, on every connection, in
:mod:`connectors.egress.transport`, which connects to the very address it checked.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from connectors.errors import EgressRefused

__all__ = [
    "LINK_LOCAL", "LOOPBACK", "NOT_GLOBAL", "Address", "EgressPolicy", "normalise_host",
    "parse_address",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that mean "the metadata service" or "this network" without any DNS answer.
_INTERNAL_NAMES = ("metadata", "metadata.google.internal", "instance-data")
_INTERNAL_SUFFIXES = (".internal", ".local", ".localdomain", ".home.arpa")
# inet_aton(3) spellings: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x).
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)
# RFC 6052 §2.1 well-known NAT64 prefix: the last 32 bits are an IPv4 address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 4291 §2.5.5.1 "IPv4-compatible" addresses (deprecated): ::a.b.c.d.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _nets(*texts: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


# The special-purpose address tables, pinned here rather than taken from the interpreter's
# ``is_global``/``is_private`` (which change between Python versions: 3.11 calls the
# deprecated site-local fec0::/10 global). From the IANA IPv4 and IPv6 Special-Purpose
# Address Registries (RFC 6890 and its updates), every block not "globally reachable",
# plus deprecated and cloud-platform blocks that no bank lives in.
#: Link-local and cloud metadata services: refused even for an operator-listed host name.
LINK_LOCAL: tuple[Network, ...] = _nets(
    "169.254.0.0/16",  # RFC 3927; 169.254.169.254 is AWS/GCP/Azure/OpenStack metadata
    "fe80::/10",  # RFC 4291
    "168.63.129.16/32",  # Azure's platform address (wireserver, DNS, health probes)
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "fd00:ec2::254/128",  # AWS IMDS over IPv6
)
#: Loopback: allowed only with ``allow_http_loopback``.
LOOPBACK: tuple[Network, ...] = _nets("127.0.0.0/8", "::1/128")
#: Every other block that is not globally reachable, or is deprecated.
NOT_GLOBAL: tuple[Network, ...] = _nets(
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::/96",  # unspecified; IPv4-compatible (deprecated, RFC 4291 §2.5.5.1)
    "64:ff9b:1::/48",  # RFC 8215 local-use IPv4/IPv6 translation
    "100::/64",  # RFC 6666 discard-only
    "2001::/23",  # IETF protocol assignments (Teredo's 2001::/32 is judged by its client)
    "2001:db8::/32", "3fff::/20",  # documentation (RFC 3849, RFC 9637)
    "5f00::/16",  # SRv6 SIDs (RFC 9602)
    "fc00::/7",  # unique local (RFC 4193)
    "fec0::/10",  # site-local (deprecated, RFC 3879)
    "ff00::/8",  # multicast
)
_TEREDO = ipaddress.IPv6Network("2001::/32")


def _within(address: Address, table: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in table)

DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_TOTAL_TIMEOUT = 30.0


def normalise_host(host: str) -> str:
    """The host as DNS and the policy see it: lower case, IDNA (UTS #46), no final dot."""
    host = host.strip("[]").rstrip(".").lower()
    if not host or host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise EgressRefused("the host name is not a valid internationalised name") from None


def parse_address(host: str) -> Address | None:
    """The address a host literal denotes, in any spelling the system resolver accepts.

    ``getaddrinfo`` turns ``2130706433``, ``0177.1`` and ``0x7f.0.0.1`` into 127.0.0.1
    (inet_aton(3)), so a check that only knows dotted quads would pass them: they are
    parsed the same way here. An IPv6 zone (``fe80::1%eth0``) is refused outright.
    """
    host = host.strip("[]").rstrip(".")
    if "%" in host:
        if ":" in host:
            raise EgressRefused("an IPv6 zone identifier is not allowed in a URL")
        raise EgressRefused("a percent-encoded host name is not allowed; write it plainly")
    try:
        address: Address = ipaddress.ip_address(host)
    except ValueError:
        if not _LEGACY_IPV4.fullmatch(host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return _unwrap(address)


def _unwrap(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # (server, client): the client is where packets go
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        low = int(address) & 0xFFFFFFFF
        return ipaddress.IPv4Address(low) if int(address) > 1 else None  # not :: or ::1
    return None


@dataclass(frozen=True, kw_only=True)
class EgressPolicy:
    """The outbound rules of one process; see the module docstring.

    Example (what ``[egress]`` in the settings builds)::

        policy = EgressPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),))
        policy.url_problem("http://169.254.169.254/")   # -> "... link-local ..."

    ``EgressPolicy.development()`` is the one for loopback sandboxes and tests.
    """

    #: Development only: allow loopback targets (127.0.0.0/8, ::1, ``localhost``), and
    #: plain http to them. Production leaves it off.
    allow_http_loopback: bool = False
    #: Networks the operator vouches for (an internal bank proxy): exempt from the
    #: private/reserved check, still https only.
    allowed_networks: tuple[Network, ...] = ()
    #: Host names the operator vouches for: whatever they resolve to is accepted, except
    #: link-local addresses (the metadata service), which only a listed network exempts.
    allowed_hosts: frozenset[str] = frozenset()
    #: Largest response body read, in bytes; a longer one is cut off with an error.
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: Seconds per read/write/pool wait, for connecting, and for a whole response body.
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    _hosts: frozenset[str] = field(init=False, repr=False, default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hosts", frozenset(normalise_host(h) for h in self.allowed_hosts))

    @classmethod
    def development(cls) -> EgressPolicy:
        """Loopback allowed: for the sandbox bank, the demo and tests on 127.0.0.1."""
        return cls(allow_http_loopback=True)

    @property
    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)

    def url_problem(self, url: str | httpx.URL) -> str | None:
        """Why `url` may not be requested, judged without DNS; None when it may."""
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except httpx.InvalidURL:
            return "not a valid URL"
        if parsed.scheme not in ("https", "http"):
            return f"the scheme {parsed.scheme or '(none)'!r} is not allowed; use https"
        if parsed.userinfo:
            return "user information is not allowed in a URL"
        try:
            host = normalise_host(parsed.host)
            address = parse_address(host)
        except EgressRefused as exc:
            return str(exc)
        if not host:
            return "the URL has no host"
        loopback = host == "localhost" or host.endswith(".localhost") or (
            address is not None and address.is_loopback
        )
        if parsed.scheme == "http" and not (loopback and self.allow_http_loopback):
            return ("plain http is allowed only to loopback in development "
                    "(egress.allow_http_loopback); use https")
        if address is not None:
            return self.address_problem(address)
        if loopback:
            return None if self.allow_http_loopback else "the host is loopback (localhost)"
        if host not in self._hosts and (
            host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES) or "." not in host
        ):
            return "the host is an internal name"
        return None

    def check_url(self, url: str | httpx.URL) -> None:
        """Raise :class:`~connectors.errors.EgressRefused` when :meth:`url_problem` says so."""
        problem = self.url_problem(url)
        if problem:
            raise EgressRefused(problem)

    def address_problem(self, address: Address, *, host: str = "") -> str | None:
        """Why a connection to `address` (resolved from `host`) is refused; None if not.

        An IPv4 address embedded in an IPv6 one (6to4, Teredo, NAT64, IPv4-compatible) is
        judged first, before any exemption: an exemption of the outer address (a listed
        network or host) must not carry the metadata service's address through.
        """
        address = _unwrap(address)
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                problem = self.address_problem(embedded, host=host)
                if problem:
                    return f"{problem}, embedded in an IPv6 address"
        if any(address in net for net in self.allowed_networks):
            return None
        if _within(address, LINK_LOCAL):
            return "a link-local address (where the cloud metadata service answers)"
        if _within(address, LOOPBACK):
            return None if self.allow_http_loopback else "a loopback address"
        if host and normalise_host(host) in self._hosts:
            return None
        if _within(address, NOT_GLOBAL) and not (
            isinstance(address, ipaddress.IPv6Address) and address in _TEREDO
        ):
            return "a private, shared or reserved address"
        return None

    def check_addresses(self, host: str, addresses: Iterable[str]) -> list[Address]:
        """Every address `host` resolved to, parsed and checked; all must pass.

        One refused answer refuses the name: a resolver that mixes a public and a
        private answer is either misconfigured or attacking.
        """
        checked: list[Address] = []
        for text in addresses:
            address = _unwrap(ipaddress.ip_address(text.split("%", 1)[0]))
            problem = self.address_problem(address, host=host)
            if problem:
                raise EgressRefused(f"the host resolves to {problem}")
            checked.append(address)
        if not checked:
            raise EgressRefused("the host resolves to no address")
        return checked
