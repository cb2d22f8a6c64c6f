"""The gateway's ASGI app, composed once from lists of routes and middleware.

Example::

    async with open_services(settings) as services:
        app = create_app(settings, services=services)

Without ``services`` the app opens them itself in its lifespan (``uvicorn --factory``
style); tests pass their own, built from fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aggregator import console
from aggregator.bankhealth import close_recorder_in
from aggregator.http.docs import docs_routes
from aggregator.http.idempotency import IdempotencyMetrics
from aggregator.http.metrics import HttpMetrics
from aggregator.http.middleware import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    ErrorBoundary,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)
from aggregator.http.openapi import build_openapi
from aggregator.http.problems import status_problem
from aggregator.http.ratelimit import RateLimitMiddleware
from aggregator.http.ratelimit.clientip import ClientAddressMiddleware
from aggregator.http.routes import api_routes
from aggregator.http.services import Services, open_services
from aggregator.settings import Settings


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """Knobs of the HTTP layer that are not settings of the deployment (yet)."""

    #: Request bodies above this are refused with 413; the API's bodies are tiny.
    max_body_bytes: int = 64 * 1024
    title: str = "Aggregator gateway API"


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    routes: Sequence[BaseRoute] = (),
    options: HttpOptions | None = None,
    metrics: HttpMetrics | None = None,
) -> Starlette:
    """The app: :func:`~aggregator.http.routes.api_routes` plus ``routes``, documented.

    Raises :class:`~aggregator.http.openapi.UndocumentedRoute` for a route that
    ``/openapi.json`` could not describe.
    """
    options = options or HttpOptions()
    metrics = metrics or HttpMetrics()
    IdempotencyMetrics.of(metrics.registry)  # on /metrics, at zero, before the first retry
    # The console and /docs are pieces the builder composes; neither imports this package.
    all_routes = [*api_routes(), *console.routes(), *docs_routes(), *routes]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Bank calls are tallied in memory and flushed in batches: the last batch is
        # written before the stores close (docs/architecture.md, "Bank health").
        if app.state.services is not None:
            yield
            await close_recorder_in(app.state.services.extra)
            return
        async with open_services(settings) as opened:
            app.state.services = opened
            yield
            await close_recorder_in(opened.extra)

    app = Starlette(
        routes=all_routes,
        middleware=[
            Middleware(ClientAddressMiddleware, proxies=settings.rate_limits.trusted_proxies),
            Middleware(RequestIdMiddleware),
            Middleware(SecurityHeadersMiddleware),
            Middleware(AccessLogMiddleware, metrics=metrics),
            # Outside the error boundary, so that problem answers carry RateLimit too.
            Middleware(RateLimitMiddleware, settings=settings, registry=metrics.registry),
            Middleware(ErrorBoundary),
            Middleware(BodyLimitMiddleware, limit=options.max_body_bytes),
        ],
        exception_handlers={HTTPException: _http_exception},
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.metrics = metrics
    app.state.openapi = build_openapi(all_routes, title=options.title, version=_version())
    return app


async def _http_exception(request: Request, exc: Exception) -> Response:
    """The router's own 404 and 405 (and any HTTPException) as problem documents."""
    if not isinstance(exc, HTTPException):
        raise exc
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; a path served by
        # one route per method (GET and DELETE /v1/connections/{id}) needs them all.
        path = request.url.path
        allowed = {
            m for r in request.app.routes
            if isinstance(r, Route) and r.methods and r.path_regex.match(path)
            for m in r.methods
        }
        headers["Allow"] = ", ".join(sorted(allowed))
    return status_problem(exc.status_code, request.url.path, headers)


def _version() -> str:
    try:
        return version("aggregator")
    except PackageNotFoundError:  # running from a checkout without installing
        return "0.0.0"
