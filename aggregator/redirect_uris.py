"""Which redirect URIs an application may register (RFC 6749 §3.1.2, RFC 9700 §4.1).

Link sends the user back to a registered URI, compared by exact string match, carrying
the outcome. A URI that parsers read differently could send the user elsewhere than
the operator thought they registered: userinfo (``https://app.example@evil.example/``),
a backslash (browsers read ``https://evil.example\\@app.example/`` as host
``evil.example``), CR/LF or other control characters and spaces (header injection
where the URI becomes a ``Location``), a wildcard (exact match only, RFC 9700 §4.1.3),
or a percent-encoded host (read by some as a different name). All are refused.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_HOST = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?",
                   re.IGNORECASE)


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` may not be registered as a redirect URI, or None if it may."""
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in uri):
        return "must not contain spaces, line breaks or other control characters"
    if "\\" in uri:
        return "must not contain a backslash"
    if "*" in uri:
        return "must not contain a wildcard: redirect URIs are matched exactly"
    try:
        parts = urlsplit(uri)
        _ = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.fragment or "#" in uri:
        return "must not have a fragment (RFC 6749 §3.1.2)"
    if "@" in parts.netloc:
        return "must not carry userinfo (user@ or user:password@)"
    host = parts.hostname or ""
    if "%" in parts.netloc:
        return "must not percent-encode its host; write the host name plainly"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an absolute https URL (http only on loopback)"
    if not _is_ip(host) and not _HOST.fullmatch(host):
        return "has a host that is not a valid host name"
    if parts.scheme == "http" and not _loopback(host):
        return "must be an absolute https URL (http only on loopback)"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
