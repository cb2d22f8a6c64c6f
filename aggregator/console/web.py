"""The console's request plumbing: templates, the session cookie, CSRF, roles.

Every page is a :func:`page` (a signed-in operator may read it) or an :func:`action`
(a ``POST`` form: signed in, a valid CSRF token, the same origin, and, unless said
otherwise, the admin role). Without a session a page answers ``303`` to the sign-in page,
which brings the operator back afterwards; a viewer's action answers ``403``.

The session lives in a ``__Host-`` cookie (RFC 6265bis §4.1.3.2: ``Secure``, ``Path=/``,
no ``Domain``, so no sibling host can set or shadow it), ``HttpOnly`` and
``SameSite=Strict``. Forms carry a token derived from the cookie's secret
(:func:`aggregator.operators.csrf_token`), and a ``POST`` whose ``Origin`` names another
origin is refused as well (OWASP CSRF cheat sheet: defence in depth).

Templates are Jinja2 with autoescaping on for every file (Starlette's
``Jinja2Templates``): a value is escaped unless a template says otherwise, and none does.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from aggregator.console.needs import ConsoleNeeds, needs_of
from aggregator.operators import (
    NoRegionAvailable,
    SignedIn,
    csrf_matches,
    csrf_token,
    resume,
)
from aggregator.templating import environment

log = logging.getLogger(__name__)

COOKIE = "__Host-aggregator-console"
SIGN_IN = "/console/sign-in"
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

#: Outcome codes an action may report back (``?done=``); the page shows the sentence.
DONE = {
    "synced": "The sync ran.",
    "redelivered": "The event is due for delivery again; a worker sends it shortly.",
    "erasure": "The erasure request was created; a worker carries it out.",
    "retried": "The failed revocations were retried; see their outcomes below.",
    "disabled": "The application is disabled: every one of its keys is refused now.",
    "revoked": "The API key is revoked.",
}

Page = Callable[[Request, SignedIn], Awaitable[Response]]
NAV = (
    ("/console", "Overview"),
    ("/console/applications", "Applications"),
    ("/console/connections", "Connections"),
    ("/console/banks", "Banks"),
    ("/console/expiries", "Consent expiries"),
    ("/console/erasures", "Erasure requests"),
    ("/console/keys", "Key custody"),
    ("/console/audit", "Audit trail"),
)


@cache
def templates() -> Jinja2Templates:
    return Jinja2Templates(env=environment("aggregator.console"))


def render(request: Request, name: str, *, status: int = 200, **context: Any) -> Response:
    who: SignedIn | None = getattr(request.state, "operator", None)
    base = {
        "who": who, "csrf": getattr(request.state, "csrf", ""), "nav": NAV,
        "path": request.url.path, "request_id": getattr(request.state, "request_id", ""),
        "done": DONE.get(request.query_params.get("done", "")),
    }
    return templates().TemplateResponse(
        request, name, {**base, **context}, status_code=status, headers=HEADERS,
    )


def message(request: Request, title: str, text: str, *, status: int) -> Response:
    return render(request, "message.html", status=status, title=title, text=text)


def needs(request: Request) -> ConsoleNeeds:
    return needs_of(request)


def client_ip(request: Request) -> str | None:
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


def request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return str(value) if value else None


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path on this origin, else the overview
    (an open redirect would make the sign-in page a phishing tool)."""
    if not target or not target.startswith("/console") or target.startswith("//"):
        return "/console"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/console"
    return target


def _to_sign_in(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = SIGN_IN if request.method != "GET" else f"{SIGN_IN}?next={quote(here, safe='')}"
    return RedirectResponse(target, status_code=303, headers=HEADERS)


def _no_region(request: Request) -> Response:
    return message(request, "No region answers",
                   "No region's database answers right now, so no session can be checked. "
                   "Try again in a moment.", status=503)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not every client sends it; the CSRF token is the primary check
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _signed_in(request: Request) -> tuple[SignedIn, str] | None:
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 128:
        return None
    who = await resume(needs(request).router, token)
    return (who, token) if who else None


def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A page any signed-in operator may read."""
    return _signed_in_endpoint(handler, form=False, admin=False)


def action(handler: Page, *, admin: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """A form ``POST``: signed in, CSRF token and origin checked, admin unless not needed."""
    return _signed_in_endpoint(handler, form=True, admin=admin)


def _signed_in_endpoint(
    handler: Page, *, form: bool, admin: bool
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            found = await _signed_in(request)
        except NoRegionAvailable:
            return _no_region(request)
        if found is None:
            return _to_sign_in(request)
        who, token = found
        request.state.operator, request.state.csrf = who, csrf_token(token)
        if form:
            refused = await _refused_form(request, who, token, admin=admin)
            if refused is not None:
                return refused
        return await handler(request, who)

    endpoint.__name__ = handler.__name__
    return endpoint


async def _refused_form(
    request: Request, who: SignedIn, token: str, *, admin: bool
) -> Response | None:
    presented = (await request.form()).get("csrf")
    if (not isinstance(presented, str) or not csrf_matches(token, presented)
            or not _same_origin(request)):
        return message(request, "Form expired",
                       "This form was not sent from a console page of this session. "
                       "Go back, reload the page and try again.", status=403)
    if admin and not who.is_admin:
        return message(request, "Not allowed",
                       "Your role is viewer: you can read every page, but only an "
                       "admin can act.", status=403)
    return None
