"""Operating the gateway: liveness, readiness, metrics, the API description, problem types.

None of these need an API key: load balancers and scrapers call them. ``/metrics`` and
``/readyz`` reveal no data (counts by route, region names); expose them to the
internet only if that is acceptable, or filter them at the ingress.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from sqlalchemy import text
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from aggregator.http.docs import problem_page, wants_html
from aggregator.http.metrics import HttpMetrics
from aggregator.http.problems import PROBLEM_TYPES, NotFound, problem
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.schema import encode
from aggregator.http.services import Services
from aggregator.http.views import Health, ProblemTypeOut, Readiness, RegionHealth
from aggregator.store import head_revision

log = logging.getLogger(__name__)

#: How long one region's database or key provider may take before it counts as down.
CHECK_TIMEOUT = 3.0


async def healthz(call: Call) -> Health:
    return Health("ok")


async def readyz(call: Call) -> Response | Readiness:
    """Ready when every region's database is reachable *and at the migration head* and
    every region's key provider reports a KEK. A bare ``SELECT 1`` would pass on an
    empty SQLite file recreated where the region's database used to be."""
    services = call.services
    regions = services.router.regions
    checks = await asyncio.gather(*(_region(services, r) for r in regions))
    report = dict(zip(regions, checks, strict=True))
    failing = {r: h for r, h in report.items() if (h.database, h.keys) != ("ok", "ok")}
    if failing:
        detail = "; ".join(f"region {r}: database {h.database}, keys {h.keys}"
                           for r, h in failing.items())
        return problem(PROBLEM_TYPES["not_ready"], detail=detail,
                       instance=call.request.url.path,
                       extra={"regions": {r: encode(h) for r, h in report.items()}})
    return Readiness("ready", report)


async def _region(services: Services, region: str) -> RegionHealth:
    database, keys = await asyncio.gather(_database(services, region), _keys(services, region))
    return RegionHealth(database, keys)


@functools.cache
def _head() -> str:
    return head_revision()


async def _database(services: Services, region: str) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            async with services.router.engine(region).connect() as conn:
                revision = (await conn.execute(
                    text("SELECT version_num FROM alembic_version")
                )).scalar_one_or_none()
    except Exception as exc:  # any failure means "not ready"; the class name says which
        log.warning("readiness: region %s database: %s", region, type(exc).__name__)
        return "unavailable"
    return "ok" if revision == _head() else "schema_out_of_date"


async def _keys(services: Services, region: str) -> str:
    custody = services.custody.get(region)
    if custody is None:
        return "unavailable"
    try:
        status = await asyncio.wait_for(
            asyncio.to_thread(custody.envelope.provider.status), CHECK_TIMEOUT
        )
    except Exception as exc:
        log.warning("readiness: region %s key provider: %s", region, type(exc).__name__)
        return "unavailable"
    return "ok" if status.latest_version > 0 else "no_kek"


async def metrics(call: Call) -> Response:
    registry: HttpMetrics = call.request.app.state.metrics
    await registry.refresh_fleet(call.services.router)
    body, content_type = registry.exposition()
    return Response(body, headers={"Content-Type": content_type})


async def openapi(call: Call) -> Response:
    document: dict[str, Any] = call.request.app.state.openapi
    return JSONResponse(document, media_type="application/vnd.oai.openapi+json")


async def problem_type(call: Call) -> ProblemTypeOut | Response:
    """The problem type as JSON, or as a page for a browser (``Accept: text/html``)."""
    kind = PROBLEM_TYPES.get(call.request.path_params["code"])
    if kind is None:
        raise NotFound("no problem type with this code")
    if wants_html(call.request):
        return problem_page(kind)
    return ProblemTypeOut(f"/problems/{kind.code}", kind.title, kind.status, kind.description)


_METRICS_EXAMPLE = (
    "# HELP aggregator_http_requests_total HTTP requests by route template and status\n"
    "# TYPE aggregator_http_requests_total counter\n"
    'aggregator_http_requests_total{method="GET",route="/v1/connections/{id}",status="200"} '
    "42.0\n"
)


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/healthz", healthz, "GET", Operation(
            description=(
                "Answers 200 while the process serves requests; it checks no dependency "
                "(use `/readyz` for that), so an orchestrator restarts only a process "
                "that hangs."
            ),
            summary="Liveness: the process answers", response=Health, auth=False,
            tags=("operations",),
        )),
        ApiRoute("/readyz", readyz, "GET", Operation(
            summary="Readiness: every region's database and key provider work",
            description=readyz.__doc__, response=Readiness, auth=False, errors=(503,),
            tags=("operations",),
        )),
        ApiRoute("/metrics", metrics, "GET", Operation(
            description=(
                "Prometheus text exposition: HTTP requests by route template and status, "
                "latency, rate-limit and idempotency outcomes, sync-budget refusals, and "
                "the fleet view of every region (due refresh backlog, outbox depth). No "
                "personal data and no ids appear in labels."
            ),
            summary="Prometheus metrics", response=None, auth=False,
            media_type="text/plain; version=0.0.4", tags=("operations",),
            examples={"200": _METRICS_EXAMPLE},
        )),
        ApiRoute("/openapi.json", openapi, "GET", Operation(
            description=(
                "This document, generated from the same declarations that validate every "
                "request; `/docs` renders it."
            ),
            summary="This API description (OpenAPI 3.1)", response=None, auth=False,
            media_type="application/vnd.oai.openapi+json", tags=("operations",),
        )),
        ApiRoute("/problems/{code}", problem_type, "GET", Operation(
            description=(
                "The problem type a problem document's `type` names: its status, title "
                "and meaning. A browser (`Accept: text/html`) gets a page; `/problems` "
                "lists them all."
            ),
            summary="What a problem `type` means", response=ProblemTypeOut, auth=False,
            tags=("operations",), path_params={"code": "The problem code, e.g. not_found."},
        )),
    ]
