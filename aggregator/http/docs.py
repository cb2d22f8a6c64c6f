"""``/docs``: the OpenAPI document rendered by Swagger UI, and problem types as pages.

Swagger UI 5.36.0 (Apache-2.0) is vendored under ``aggregator/http/static/swagger-ui/``
(its licence and notice beside it) and served from the package, so the page works
offline and loads nothing from a CDN; the Content-Security-Policy allows scripts and
connections to this origin only. ``GET /problems`` lists every problem type as HTML, and
``GET /problems/{code}`` answers a browser (``Accept: text/html``) with a page and any
other client with the JSON it always did (:mod:`aggregator.http.routes.system`).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from aggregator.http.problems import PROBLEM_TYPES, ProblemType
from aggregator.templating import environment

SWAGGER_UI = "swagger-ui"  # 5.36.0, see static/swagger-ui/README.md
_ASSETS = {
    "swagger-ui-bundle.js": (f"{SWAGGER_UI}/swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (f"{SWAGGER_UI}/swagger-ui.css", "text/css"),
    "LICENSE": (f"{SWAGGER_UI}/LICENSE", "text/plain"),
    "NOTICE": (f"{SWAGGER_UI}/NOTICE", "text/plain"),
    "docs.js": ("docs.js", "text/javascript"),
}
DOCS_HEADERS = {
    # Swagger UI sets inline style attributes and shows data: images; nothing else is needed.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; frame-ancestors 'none'",
    "Cache-Control": "public, max-age=300",
}


@cache
def _env() -> Environment:
    return environment("aggregator.http")


@cache
def _asset(name: str) -> bytes:
    return files("aggregator.http").joinpath("static", name).read_bytes()


async def docs(request: Request) -> Response:
    title = request.app.state.openapi.get("info", {}).get("title", "API")
    html = _env().get_template("docs.html").render(title=title)
    return HTMLResponse(html, headers={**DOCS_HEADERS, "Cache-Control": "no-cache"})


async def asset(request: Request) -> Response:
    found = _ASSETS.get(request.path_params["name"])
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    path, media_type = found
    return Response(_asset(path), media_type=media_type,
                    headers={"Cache-Control": "public, max-age=86400"})


def problem_page(kind: ProblemType | None) -> HTMLResponse:
    heading = kind.title if kind else "Problem types"
    html = _env().get_template("problems.html").render(
        heading=heading, one=kind, types=sorted(PROBLEM_TYPES.values(), key=lambda t: t.code),
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)


def wants_html(request: Request) -> bool:
    """A browser navigating here (``Accept: text/html`` before any JSON type)."""
    accept = request.headers.get("accept", "")
    html, json = accept.find("text/html"), accept.find("json")
    return html >= 0 and (json < 0 or html < json)


async def problems(request: Request) -> Response:
    return problem_page(None)


def docs_routes() -> list[BaseRoute]:
    return [
        Route("/docs", docs, methods=["GET"], include_in_schema=False),
        Route("/docs/static/{name}", asset, methods=["GET"], include_in_schema=False),
        Route("/problems", problems, methods=["GET"], include_in_schema=False),
    ]
