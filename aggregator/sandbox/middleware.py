"""Pure-ASGI middleware of the sandbox bank."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_issuer: ContextVar[str] = ContextVar("sandbox_issuer")


def current_issuer() -> str:
    """The issuer of the request being served (authlib's hooks get no request)."""
    return _issuer.get()


class IssuerContext:
    """Publishes the issuer for this request: the bound base URL, else the request's own."""

    def __init__(self, app: ASGIApp, issuer: Callable[[], str | None]) -> None:
        self.app = app
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        issuer = self.issuer() or str(Request(scope).base_url).rstrip("/")
        token = _issuer.set(issuer)
        try:
            await self.app(scope, receive, send)
        finally:
            _issuer.reset(token)


# OBIE asks for a UUID (RFC 4122); any short token-like value is echoed, anything else
# is replaced, so a hostile header cannot inject into our response headers or logs.
_INTERACTION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class FapiInteractionId:
    """Echoes ``x-fapi-interaction-id`` (FAPI 1.0 part 1 §6.2.1), or mints one."""

    header = "x-fapi-interaction-id"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(self.header, "")
        interaction_id = given if _INTERACTION_ID.match(given) else str(uuid.uuid4())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[self.header] = interaction_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class LoopbackOnly:
    """Refuses (403) any peer that is not on this machine; guards the admin endpoints."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _is_loopback(scope.get("client")):
            response = JSONResponse({"error": "forbidden"}, status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_loopback(client: tuple[str, int] | None) -> bool:
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False
