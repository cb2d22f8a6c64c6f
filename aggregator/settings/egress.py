"""``[egress]``: where the process may send requests (the SSRF guard of every client)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_network
from typing import Any

from aggregator.errors import ConfigError
from aggregator.settings.env import Origins
from aggregator.settings.values import positive, reject_unknown
from connectors import EgressPolicy

_EGRESS_KEYS = frozenset({
    "allow_http_loopback", "allowed_networks", "allowed_hosts", "max_response_bytes",
    "timeout_seconds", "connect_timeout_seconds", "total_timeout_seconds",
})


def egress_policy(raw: Mapping[str, Any], origins: Origins) -> EgressPolicy:
    """The ``[egress]`` table as the :class:`EgressPolicy` every httpx client is built with."""
    reject_unknown(raw, _EGRESS_KEYS, origins.source, "egress.")

    def get(key: str, default: Any) -> tuple[Any, str]:
        return raw.get(key, default), origins.of("egress", key)

    def number(key: str, default: float) -> float:
        value, where = get(key, default)
        if not positive(value):
            raise ConfigError(f"{where} must be a positive number")
        return float(value)

    flag, where = get("allow_http_loopback", False)
    if not isinstance(flag, bool):
        raise ConfigError(f"{where} must be a boolean")
    lists = {key: get(key, []) for key in ("allowed_networks", "allowed_hosts")}
    for value, where in lists.values():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
    networks, where = lists["allowed_networks"]
    try:
        parsed = tuple(ip_network(n, strict=True) for n in networks)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return EgressPolicy(
        allow_http_loopback=flag, allowed_networks=parsed,
        allowed_hosts=frozenset(lists["allowed_hosts"][0]),
        max_response_bytes=int(number("max_response_bytes", 10 * 1024 * 1024)),
        timeout=number("timeout_seconds", 10.0),
        connect_timeout=number("connect_timeout_seconds", 5.0),
        total_timeout=number("total_timeout_seconds", 30.0),
    )
