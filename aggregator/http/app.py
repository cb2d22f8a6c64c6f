"""The composer: the gateway's ASGI app, built once from its pieces' routes and needs.

Each piece exposes its routes and names what it needs from the process: the API
(:mod:`aggregator.http.routes`, :class:`~aggregator.http.services.Services`), the Link
flow (:mod:`aggregator.link.routes`, :class:`~aggregator.link.needs.LinkNeeds`), Plaid
(:mod:`aggregator.plaid.routes`, :class:`~aggregator.plaid.needs.PlaidNeeds`), the
console (:mod:`aggregator.console`, :class:`~aggregator.console.needs.ConsoleNeeds`)
and ``/docs``. Only this module knows them all; none of them imports it, so composition
runs one way (docs/architecture.md, "Composition"; ``tests/aggregator/http/
test_composition.py`` walks the imports). Example::

    async with open_services(settings) as services:
        app = create_app(settings, services=services)

Without ``services`` the app opens them itself in its lifespan (``uvicorn --factory``
style); tests pass their own, built from fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aggregator import console
from aggregator.bank_profiles import check_profiles
from aggregator.bankhealth import close_recorder_in
from aggregator.custody import open_custody
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
from aggregator.http.services import BankClients, Services
from aggregator.link import routes as link
from aggregator.link.wiring import install as install_link
from aggregator.plaid import routes as plaid
from aggregator.plaid.wiring import install_plaid_webhooks
from aggregator.settings import Settings
from aggregator.store import RegionRouter, require_head
from aggregator.sync import BankDirectory
from connectors import BankProfile, egress_client


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
    """The app: every piece's routes (:func:`gateway_routes`) plus ``routes``, documented.

    Raises :class:`~aggregator.http.openapi.UndocumentedRoute` for a route that
    ``/openapi.json`` could not describe.
    """
    options = options or HttpOptions()
    metrics = metrics or HttpMetrics()
    IdempotencyMetrics.of(metrics.registry)  # on /metrics, at zero, before the first retry
    all_routes = [*gateway_routes(), *routes]

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


def gateway_routes() -> list[BaseRoute]:
    """Every piece's routes, in the order the router tries them (and OpenAPI lists them)."""
    return [*api_routes(), *link.routes(), *plaid.routes(), *console.routes(),
            *docs_routes()]


#: Builds the process's :class:`BankClients` from the loaded profiles and the shared client.
BankClientsFactory = Callable[[Mapping[str, BankProfile], httpx.AsyncClient], BankClients]


@asynccontextmanager
async def open_services(
    settings: Settings, *, http: httpx.AsyncClient | None = None,
    bank_clients: BankClientsFactory | None = None,
) -> AsyncIterator[Services]:
    """Everything a gateway process needs, checked; closed again on exit.

    Refuses to start on anything wrong: a database behind the migration head, a missing
    KEK, a bad bank profile or missing bank credentials. Outbound calls go through one
    :func:`connectors.egress_client` built with ``settings.egress`` (the SSRF guard),
    unless a test passes its own ``http``; a bank with a transport certificate gets its
    own client from the directory.

    With the default ``bank_clients`` the Link flow and the sync job are installed
    too (:func:`aggregator.link.wiring.install`, with ``settings.public_url``), and
    Plaid's receiver, so ``create_app(settings)`` alone serves working Link pages.
    Another :class:`BankClients` implementation (a test double) gets neither.
    """
    profiles = check_profiles(settings)
    async with AsyncExitStack() as stack:
        router = RegionRouter(settings)
        stack.push_async_callback(router.dispose)
        for region in router.regions:
            await require_head(router.engine(region), region)
        custody = await open_custody(router, settings)
        for keys in custody.values():
            stack.callback(keys.close)
        if http is None:
            http = await stack.enter_async_context(egress_client(settings.egress))
        if bank_clients is None:
            directory = BankDirectory(profiles, http, policy=settings.egress)
            stack.push_async_callback(directory.aclose)
            banks: BankClients = directory
        else:
            banks = bank_clients(profiles, http)
        services = Services(settings, router, custody, banks)
        stack.push_async_callback(services.aclose)  # before the router and clients close
        if isinstance(services.banks, BankDirectory):
            install_link(services, public_url=settings.public_url)
            install_plaid_webhooks(services)
        yield services


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
