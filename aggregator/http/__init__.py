"""The gateway's HTTP toolkit and API (Starlette): ``/v1``, problem details, OpenAPI.

What the pieces (the API routes, Link, Plaid, the console) build on is re-exported here;
the modules themselves stay small:

- :mod:`~aggregator.http.services`: :class:`Services`, the seams (:class:`BankClients`,
  :class:`SyncJob`);
- :mod:`~aggregator.http.routing`: :class:`ApiRoute`, :class:`Operation`, :class:`Call`;
- :mod:`~aggregator.http.routes`: one module per resource of the API;
- :mod:`~aggregator.http.problems`, :mod:`~aggregator.http.schema`,
  :mod:`~aggregator.http.openapi`, :mod:`~aggregator.http.examples`,
  :mod:`~aggregator.http.middleware`, :mod:`~aggregator.http.logs`,
  :mod:`~aggregator.http.metrics`, :mod:`~aggregator.http.auth`,
  :mod:`~aggregator.http.cursors`;
- :mod:`~aggregator.http.ratelimit`: token buckets per application, route class and
  client address (``[rate_limits]``).

The composer, :mod:`aggregator.http.app` (:func:`~aggregator.http.app.create_app`,
:func:`~aggregator.http.app.open_services`), is deliberately *not* imported here: a
piece that imports this package must not pull in the app that includes it
(docs/architecture.md, "Composition").
"""

from aggregator.http.logs import configure_logging, current_request_id
from aggregator.http.problems import (
    Conflict,
    FieldError,
    HttpProblem,
    NotFound,
    ValidationFailed,
    problem_for,
)
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.schema import decode, encode, rules
from aggregator.http.services import (
    BankClients,
    Services,
    SyncJob,
    SyncSummary,
)

__all__ = [
    "ApiRoute",
    "BankClients",
    "Call",
    "Conflict",
    "FieldError",
    "HttpProblem",
    "NotFound",
    "Operation",
    "Services",
    "SyncJob",
    "SyncSummary",
    "ValidationFailed",
    "configure_logging",
    "current_request_id",
    "decode",
    "encode",
    "problem_for",
    "rules",
]
