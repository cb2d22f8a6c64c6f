"""Binding a Link flow to the browser that started it (RFC 6749 §10.12, RFC 9700 §4.7).

The link token and the bank's callback URL (``code``, ``state``, ``iss``) are bearer
material: whoever presents them could otherwise finish the flow. A captured callback
URL, replayed from another browser, would complete the link and redirect that browser
to the app with ``outcome=success``; sent to a victim, it would link the attacker's
bank account to the victim's session at the app (login CSRF).

So the first ``GET /link/{token}`` sets a random cookie and the session keeps only its
SHA-256 (``link_sessions.browser_digest``). The bank pick (``POST /link/{token}``) and
the callback must carry the same cookie; otherwise the person sees an error page and
nothing is claimed. One cookie value serves every link a browser runs at once (a second
tab reuses it), so parallel flows in one browser do not undo each other.

The cookie is ``__Host-aggregator-link; Secure; HttpOnly; SameSite=Lax; Path=/``:
``__Host-`` (RFC 6265bis §4.1.3.2) keeps a sibling host or a plain-http response from
planting a value of its choosing, ``Lax`` still sends it on the bank's top-level
redirect back. A ``Secure`` cookie never comes back over plain http, so when the
gateway's base URL is ``http://`` (allowed only on loopback and for local development,
``aggregator demo`` and the tests) the cookie is ``aggregator-link`` without ``Secure``
and without the prefix: nothing crosses a network there (and a bank on another port of
the same loopback host is the same site, so even its form post carries the cookie).
"""

from __future__ import annotations

import hmac
import re
import secrets

from sqlalchemy import update
from starlette.requests import Request
from starlette.responses import Response

from aggregator.ids import secret_digest
from aggregator.models import LinkSession, LinkStatus
from aggregator.models.base import table_of
from aggregator.store import RegionRouter

SECURE_NAME = "__Host-aggregator-link"
LOOPBACK_NAME = "aggregator-link"
POST_NAME = "__Host-aggregator-link-post"
_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)


def cookie_name(base_url: str) -> str:
    """The cookie's name for a gateway reached at ``base_url``."""
    return SECURE_NAME if base_url.startswith("https://") else LOOPBACK_NAME


def presented(request: Request, base_url: str) -> str | None:
    """The binding cookie the browser sent, if it is well-formed."""
    value = request.cookies.get(cookie_name(base_url), "")
    return value if _VALUE.fullmatch(value) else None


def new_value() -> str:
    return secrets.token_urlsafe(32)


def digest(value: str) -> bytes:
    return secret_digest(value)


def matches(expected: bytes | None, value: str | None) -> bool:
    """Whether ``value`` is the cookie whose digest the session keeps (constant time)."""
    if expected is None or value is None:
        return False
    return hmac.compare_digest(bytes(expected), digest(value))


def set_cookie(response: Response, base_url: str, value: str) -> None:
    """A browser-session cookie (no ``Max-Age``): the flow ends when the browser does.

    Over https a twin, ``__Host-aggregator-link-post`` with ``SameSite=None``, carries the
    same value for banks that answer by form post (OIDC Form Post Response Mode): a
    cross-site POST never carries a ``Lax`` cookie. The twin binds no less: it must still
    equal the value the session's digest names.
    """
    secure = base_url.startswith("https://")
    response.set_cookie(cookie_name(base_url), value, path="/", httponly=True,
                        samesite="lax", secure=secure)
    if secure:
        response.set_cookie(POST_NAME, value, path="/", httponly=True, samesite="none",
                            secure=True)


def presented_by_post(request: Request, base_url: str) -> str | None:
    """The binding cookie on a bank's form-post callback (the twin, else the Lax one)."""
    value = request.cookies.get(POST_NAME, "") if base_url.startswith("https://") else ""
    return value if _VALUE.fullmatch(value) else presented(request, base_url)


async def bind(router: RegionRouter, region: str, link_id: str, value: str) -> bool:
    """Bind a pending session to the browser holding ``value``; once, first come.

    A compare-and-set on ``browser_digest IS NULL``: two browsers opening the same link
    at once cannot both get it; the loser is told the link belongs to another browser.
    """
    c = table_of(LinkSession).c
    async with router.session(region) as session, session.begin():
        moved = await session.execute(
            update(table_of(LinkSession))
            .where(c.id == link_id, c.status == LinkStatus.PENDING, c.browser_digest.is_(None))
            .values(browser_digest=digest(value))
        )
    return getattr(moved, "rowcount", 0) == 1
