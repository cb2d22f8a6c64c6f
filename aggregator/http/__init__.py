"""The gateway's HTTP API (Starlette): ``/v1``, problem details, OpenAPI, health, metrics.

What other modules use is re-exported here; the modules themselves stay small:

- :mod:`~aggregator.http.app`: :func:`create_app`, composed once from lists;
- :mod:`~aggregator.http.services`: :class:`Services`, :func:`open_services`, the seams
  (:class:`BankClients`, :class:`SyncJob`);
- :mod:`~aggregator.http.routing`: :class:`ApiRoute`, :class:`Operation`, :class:`Call`;
- :mod:`~aggregator.http.routes`: one module per resource, listed in ``ROUTE_MODULES``;
- :mod:`~aggregator.http.problems`, :mod:`~aggregator.http.schema`,
  :mod:`~aggregator.http.openapi`, :mod:`~aggregator.http.middleware`,
  :mod:`~aggregator.http.logs`, :mod:`~aggregator.http.metrics`,
  :mod:`~aggregator.http.auth`, :mod:`~aggregator.http.cursors`;
- :mod:`~aggregator.http.ratelimit`: token buckets per application, route class and
  client address (``[rate_limits]``).
"""

from aggregator.http.app import HttpOptions, create_app
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
    open_services,
)

__all__ = [
    "ApiRoute",
    "BankClients",
    "Call",
    "Conflict",
    "FieldError",
    "HttpOptions",
    "HttpProblem",
    "NotFound",
    "Operation",
    "Services",
    "SyncJob",
    "SyncSummary",
    "ValidationFailed",
    "configure_logging",
    "create_app",
    "current_request_id",
    "decode",
    "encode",
    "open_services",
    "problem_for",
    "rules",
]
