"""The gateway's routes, composed from one module per resource.

Each module named in :data:`ROUTE_MODULES` exposes ``routes() -> list[BaseRoute]``;
:func:`api_routes` concatenates them in this order, so adding a resource never touches
another's module. The Link flow (``aggregator/link/``) joins by adding its module's
dotted name here, e.g. ``"aggregator.link.routes"``; its routes must be
:class:`~aggregator.http.routing.ApiRoute` (documented in ``/openapi.json``) or say
``include_in_schema=False``.
"""

from __future__ import annotations

import importlib

from starlette.routing import BaseRoute

ROUTE_MODULES: tuple[str, ...] = (
    "aggregator.http.routes.system",
    "aggregator.http.routes.users",
    "aggregator.http.routes.connections",
    "aggregator.http.routes.syncs",
    "aggregator.http.routes.transactions",
    "aggregator.http.routes.erasure",
    "aggregator.http.routes.events",
    "aggregator.link.routes",
    "aggregator.http.routes.plaid_webhooks",
    "aggregator.http.routes.plaid_link",
)


def api_routes() -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for name in ROUTE_MODULES:
        out.extend(importlib.import_module(name).routes())
    return out
