"""The API's own routes, composed from one module per resource.

Each module in :data:`ROUTE_MODULES` exposes ``routes() -> list[BaseRoute]``;
:func:`api_routes` concatenates them in this order, so adding a resource never touches
another's module. This is one piece among others: the Link flow
(:mod:`aggregator.link.routes`), Plaid (:mod:`aggregator.plaid.routes`) and the console
expose their routes themselves, and only the composer (:mod:`aggregator.http.app`) puts
them together; nothing here imports them (docs/architecture.md, "Composition").
"""

from __future__ import annotations

from types import ModuleType

from starlette.routing import BaseRoute

from aggregator.http.routes import (
    connections,
    erasure,
    events,
    syncs,
    system,
    transactions,
    users,
)

ROUTE_MODULES: tuple[ModuleType, ...] = (
    system, users, connections, syncs, transactions, erasure, events,
)


def api_routes() -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for module in ROUTE_MODULES:
        out.extend(module.routes())
    return out
