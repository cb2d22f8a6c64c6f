"""``[http]``: the gateway's external base URL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aggregator.errors import ConfigError
from aggregator.settings.env import Origins
from aggregator.settings.values import is_loopback, reject_unknown


def public_url(raw: Mapping[str, Any], origins: Origins) -> str | None:
    """Validate the external base URL that OAuth callbacks and Link URLs are built on.

    Banks send authorization codes to it, so it must be https (RFC 6749 §3.1.2.1); plain
    http is allowed only on loopback, where nothing crosses a network (RFC 8252 §7.3).
    Userinfo, a query or a fragment would be copied into every callback URL: refused.
    """
    reject_unknown(raw, frozenset({"public_url"}), origins.source, "http.")
    value, where = raw.get("public_url"), origins.of("http", "public_url")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port outside 0-65535 raises ValueError
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {value!r} must be an absolute http(s) URL")
    if parts.username is not None or "?" in value or "#" in value:
        raise ConfigError(f"{where}: {value!r} must not carry userinfo, a query or a fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(f"{where}: {value!r} must use https (http only on loopback)")
    return value.rstrip("/")
