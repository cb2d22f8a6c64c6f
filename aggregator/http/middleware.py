"""The gateway's pure-ASGI middleware, outermost first as :func:`create_app` stacks them.

- :class:`RequestIdMiddleware` names every request, in the response and in every log line;
- :class:`SecurityHeadersMiddleware` adds ``nosniff`` and ``no-store`` where a route did not;
- :class:`AccessLogMiddleware` logs and measures each request once, by route template;
- :class:`ErrorBoundary` turns any error escaping the app into a problem document;
- :class:`BodyLimitMiddleware` refuses bodies over the limit before they are buffered.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, and the
context variable holding the request id is set in the very task that runs the endpoint.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aggregator.http.logs import bind_request_id, unbind_request_id
from aggregator.http.metrics import UNMATCHED, HttpMetrics
from aggregator.http.problems import ContentTooLarge, problem_for, problem_type_of
from aggregator.http.ratelimit.clientip import VIA_TRUSTED_PROXY
from aggregator.ids import is_request_id, new_id

log = logging.getLogger("aggregator.http")

REQUEST_ID_HEADER = "X-Request-Id"


def _state(scope: Scope) -> dict[str, object]:
    state: dict[str, object] = scope.setdefault("state", {})
    return state


class RequestIdMiddleware:
    """Accepts an inbound ``X-Request-Id`` that is ours or a UUID, else mints ``req_…``.

    Anything else a client sends is replaced, not echoed: a request id reaches logs, the
    audit trail and response headers, so it must not be a vehicle for injection. An
    inbound id is believed only from a trusted proxy (``[rate_limits] trusted_proxies``,
    as :class:`~aggregator.http.ratelimit.clientip.ClientAddressMiddleware` found): from
    anyone else it could name another request in the hash-chained audit trail.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = (Headers(scope=scope).get(REQUEST_ID_HEADER, "")
                 if _state(scope).get(VIA_TRUSTED_PROXY) else "")
        request_id = given if len(given) <= 40 and is_request_id(given) else new_id("req")
        _state(scope)["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        token = bind_request_id(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            unbind_request_id(token)


class SecurityHeadersMiddleware:
    """Fills in the headers every answer of an API holding personal data should carry.

    ``X-Content-Type-Options: nosniff`` keeps a browser from sniffing a JSON body into
    HTML or script; ``Cache-Control: no-store`` keeps answers (user data, link pages)
    out of shared and browser caches (RFC 9111 §5.2.2.5). A route that sets either
    header itself (a Link page) keeps its own value.
    """

    DEFAULTS = (("x-content-type-options", "nosniff"), ("cache-control", "no-store"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.DEFAULTS:
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AccessLogMiddleware:
    """One log line and one metrics sample per request, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app dies before answering

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = route.path if isinstance(route, BaseRoute) and hasattr(route, "path") \
                else UNMATCHED
            self.metrics.observe(scope["method"], template, status, elapsed)
            log.info("%s %s %d", scope["method"], template, status, extra={"fields": {
                "method": scope["method"], "route": template, "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "app_id": _state(scope).get("app_id"),
            }})


class ErrorBoundary:
    """The last word on errors: whatever escapes the app becomes a problem document.

    Expected errors (4xx, and mapped 5xx such as a bank outage) are logged without a
    traceback; anything unmapped is logged with one (redacted) and answered with a 500
    that names only the request id. Once a response has started nothing can be
    replaced, so the error goes on to the server, which drops the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except ClientDisconnect:
            log.info("client disconnected before sending its whole request")
            return
        except Exception as exc:
            kind = problem_type_of(exc)
            if kind.code == "internal_error":
                log.exception("unhandled %s", type(exc).__name__)
            else:
                log.info("request failed: %s (%s)", kind.code, type(exc).__name__)
            if started:
                raise
            await problem_for(exc, instance=scope.get("path"))(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes with a 413 problem.

    A declared ``Content-Length`` over the limit is refused before the app runs, so no
    byte of it is buffered; a chunked body is counted as it is read, and reading past
    the limit raises :class:`~aggregator.http.problems.ContentTooLarge`.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            error = ContentTooLarge(f"request bodies are limited to {self.limit} bytes")
            await problem_for(error, instance=scope.get("path"))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ContentTooLarge(f"request bodies are limited to {self.limit} bytes")
            return message

        await self.app(scope, receive if declared is not None else counted, send)
