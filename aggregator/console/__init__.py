"""The operator console at ``/console``: server-rendered pages for the people who run
the gateway, separate from the API's applications.

- :mod:`~aggregator.console.web`: templates, session cookie, CSRF, roles;
- :mod:`~aggregator.console.auth`: sign-in and sign-out (accounts: :mod:`aggregator.operators`);
- :mod:`~aggregator.console.pages`: the pages, each reading every region from its own store;
- :mod:`~aggregator.console.actions`: the admin actions, each in the audit trail;
- :mod:`~aggregator.console.reads`: the per-region queries; :mod:`~aggregator.console.chart`:
  the server-drawn SVG chart.

The console exposes :func:`routes` and names what it needs
(:class:`~aggregator.console.needs.ConsoleNeeds`); the HTTP app builder includes it. It
works without JavaScript (there is none) and never shows a sealed value.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aggregator.console import actions, auth, pages
from aggregator.console.needs import ConsoleNeeds
from aggregator.console.web import action, page

__all__ = ["ConsoleNeeds", "routes"]


@cache
def _stylesheet() -> bytes:
    return files("aggregator.console").joinpath("static", "console.css").read_bytes()


async def stylesheet(request: Request) -> Response:
    return Response(_stylesheet(), media_type="text/css",
                    headers={"Cache-Control": "public, max-age=3600"})


def routes() -> list[BaseRoute]:
    """Every console route; none is part of the API's OpenAPI document."""
    get, post = ["GET"], ["POST"]
    table: list[tuple[str, object, list[str]]] = [
        ("/console/static/console.css", stylesheet, get),
        ("/console/sign-in", auth.sign_in_page, get),
        ("/console/sign-in", auth.sign_in_submit, post),
        ("/console/sign-out", auth.sign_out, post),
        ("/console", page(pages.overview), get),
        ("/console/applications", page(pages.applications), get),
        ("/console/connections", page(pages.connections), get),
        ("/console/connections/{id}", page(pages.connection), get),
        ("/console/banks", page(pages.banks), get),
        ("/console/expiries", page(pages.expiries), get),
        ("/console/erasures", page(pages.erasures), get),
        ("/console/keys", page(pages.keys), get),
        ("/console/audit", page(pages.audit_trail), get),
        ("/console/audit/verify", action(actions.verify_chain, admin=False), post),
        ("/console/connections/{id}/sync", action(actions.trigger_sync), post),
        ("/console/events/{id}/redeliver", action(actions.redeliver_event), post),
        ("/console/erasures", action(actions.start_erasure), post),
        ("/console/erasures/{id}/retry", action(actions.retry_revocations), post),
        ("/console/applications/{id}/disable", action(actions.disable_app), post),
        ("/console/keys/{prefix}/revoke", action(actions.revoke_api_key), post),
    ]
    return [Route(path, endpoint, methods=methods, include_in_schema=False)  # type: ignore[arg-type]
            for path, endpoint, methods in table]
