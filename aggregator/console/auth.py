"""Signing in and out of the console.

The sign-in form is protected against login CSRF (a page elsewhere signing the
operator's browser into an attacker's account) with a double-submit token: a random
value in a short-lived ``__Host-`` cookie that the form must repeat.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from aggregator.console.web import (
    COOKIE,
    HEADERS,
    action,
    client_ip,
    needs,
    render,
    request_id,
    safe_next,
)
from aggregator.operators import (
    IDLE_TIMEOUT,
    LIFETIME,
    NoRegionAvailable,
    SignedIn,
    resume,
    sign_in,
)
from aggregator.operators import sign_out as end_session

FORM_COOKIE = "__Host-aggregator-console-form"


def _form(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = render(request, "sign_in.html", status=status, title="Sign in to the console",
                      nonce=nonce, error=error,
                      next=safe_next(request.query_params.get("next")
                                     or _form_next(request)))
    response.set_cookie(FORM_COOKIE, nonce, max_age=600, path="/", secure=True,
                        httponly=True, samesite="strict")
    return response


def _form_next(request: Request) -> str | None:
    value = getattr(request.state, "next", None)
    return value if isinstance(value, str) else None


async def sign_in_page(request: Request) -> Response:
    """The sign-in form; an operator with a live session goes straight on."""
    token = request.cookies.get(COOKIE)
    try:
        live = bool(token and len(token) <= 128 and await resume(needs(request).router, token))
    except NoRegionAvailable:
        live = False
    if live:
        target = safe_next(request.query_params.get("next"))
        return RedirectResponse(target, status_code=303, headers=HEADERS)
    return _form(request)


async def sign_in_submit(request: Request) -> Response:
    form = await request.form()
    name, password = form.get("name"), form.get("password")
    nonce, expected = form.get("nonce"), request.cookies.get(FORM_COOKIE)
    target = form.get("next")
    request.state.next = target if isinstance(target, str) else None
    if (not isinstance(nonce, str) or not expected
            or not hmac.compare_digest(nonce.encode(), expected.encode())):
        return _form(request, status=403,
                     error="The sign-in form expired. Please try again.")
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        return _form(request, status=400, error="Enter your name and your password.")
    try:
        signed = await sign_in(needs(request).router, name[:64], password,
                               request_id=request_id(request), client_ip=client_ip(request))
    except NoRegionAvailable:
        return _form(request, status=503,
                     error="No region's database answers; nobody can sign in right now.")
    if signed is None:
        return _form(request, status=401, error="That name and password do not match.")
    _, token = signed
    response = RedirectResponse(safe_next(request.state.next), status_code=303,
                                headers=HEADERS)
    response.set_cookie(COOKIE, token, max_age=int(LIFETIME.total_seconds()), path="/",
                        secure=True, httponly=True, samesite="strict")
    response.delete_cookie(FORM_COOKIE, path="/", secure=True, httponly=True,
                           samesite="strict")
    return response


async def _sign_out(request: Request, who: SignedIn) -> Response:
    await end_session(needs(request).router, who, request_id=request_id(request),
                      client_ip=client_ip(request))
    response = RedirectResponse("/console/sign-in", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


sign_out = action(_sign_out, admin=False)

#: For the sign-in page's note on how long a session lasts.
TIMEOUTS = {"idle_minutes": int(IDLE_TIMEOUT.total_seconds() // 60),
            "lifetime_hours": int(LIFETIME.total_seconds() // 3600)}
