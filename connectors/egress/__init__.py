"""The outbound (egress) policy and the one factory of outbound httpx clients (SSRF guard).

:mod:`connectors.egress.policy` says which URLs and resolved addresses may be reached;
:mod:`connectors.egress.transport` enforces it on every connection and response.
"""

from connectors.egress.policy import EgressPolicy, normalise_host, parse_address
from connectors.egress.transport import (
    GuardedBackend,
    GuardedTransport,
    Resolver,
    check_destination,
    egress_client,
    system_resolver,
)

__all__ = [
    "EgressPolicy",
    "GuardedBackend",
    "GuardedTransport",
    "Resolver",
    "check_destination",
    "egress_client",
    "normalise_host",
    "parse_address",
    "system_resolver",
]
