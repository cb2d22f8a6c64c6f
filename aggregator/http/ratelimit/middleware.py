"""The rate limiter in the request path: a pure-ASGI middleware plus one hook for ``/v1``.

- ``link`` requests are decided here, before routing, per client address, always in the
  first configured region (a fixed home): were the bucket kept in the region a link token
  (``/link/lnk_eu_…``) or OAuth ``state`` (``sta_eu_…``) names, a client alternating
  made-up ``lnk_eu_``/``lnk_us_`` tokens would get one budget per region. The bucket holds
  only an HMAC of the address under that region's pepper. A refusal is an HTML page (a
  person is reading, as every Link page answers), with the same headers.
- ``read``/``write`` requests need the calling application, known only once the route
  has authenticated it: the middleware leaves a gate in the request's state and
  :func:`admit_application` (called by :class:`~aggregator.http.routing.ApiRoute` right
  after authentication) charges the application's bucket in the region the request is
  routed to, the one it was authenticated in. A refusal raises :class:`RateLimited`, a
  429 problem (RFC 9457, with the request id) carrying ``Retry-After`` and the RateLimit
  fields. Budgets are therefore per region (in Redis too: keys name the region): each
  region's database is the capacity they protect, and no region depends on another's.
- ``/v1`` answers of 401 are charged to the client address's ``unauthenticated`` bucket
  after the answer is sent; an address whose bucket refused is answered 429 before
  routing until a token is back (:mod:`~aggregator.http.ratelimit.failures`).

The middleware sits outside the error boundary, so problem answers (404, 422, …) carry
``RateLimit-Policy`` and ``RateLimit`` like granted ones; its own work before and after
the app is guarded here, since no boundary is outside it. If the store fails, the request
goes through (fail open, logged, ``aggregator_rate_limit_decisions{outcome=
"store_error"}``): an outage of the limiter must not become an outage of the API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aggregator.http.problems import PROBLEM_TYPES, HttpProblem, ProblemResponse, problem
from aggregator.http.ratelimit.clientip import client_address, subject_of
from aggregator.http.ratelimit.failures import RefusedAddresses
from aggregator.http.ratelimit.leases import LeasedBuckets
from aggregator.http.ratelimit.policy import Decision, Level, RouteClass, classify
from aggregator.http.ratelimit.stores import (
    BucketStore,
    DatabaseBuckets,
    MemoryBuckets,
    RateLimitStoreUnavailable,
)
from aggregator.http.services import Services
from aggregator.settings import RateLimit, RateLimitSettings, Settings

log = logging.getLogger(__name__)

#: ``Services.extra`` key of the process's :class:`BucketStore`; built on first use if absent
#: (and then closed with the services; one a test put there stays the test's).
STORE_KEY = "rate_limit_store"
_GATE = "rate_limit_gate"
_DECISION = "rate_limit_decision"


class RateLimited(HttpProblem):
    """Raised when the calling application's bucket for the route class is empty."""

    code = "rate_limited"

    def __init__(self, decision: Decision) -> None:
        name = decision.route_class.value
        super().__init__(
            f"too many {name} requests; retry after {decision.retry_after} s",
            extra={"violated-policies": [name]},  # draft-ietf-httpapi-ratelimit-headers §5.1
            headers=decision.headers(),
        )
        self.retry_after = decision.retry_after


def open_store(settings: RateLimitSettings, services: Services) -> BucketStore:
    """The store ``[rate_limits] backend`` names, for this process."""
    if settings.backend == "redis":
        from aggregator.http.ratelimit.redis_store import RedisBuckets

        return RedisBuckets.from_settings(settings)
    if settings.backend == "memory":
        return MemoryBuckets()
    # Leases spare most reads a database write (see :mod:`.leases` for the bound).
    return LeasedBuckets(DatabaseBuckets(services.router))


@dataclass
class _Gate:
    limiter: RateLimitMiddleware
    services: Services
    scope: Scope


class RateLimitMiddleware:
    """See the module docstring; ``settings.rate_limits`` configures it."""

    def __init__(self, app: ASGIApp, settings: Settings,
                 registry: CollectorRegistry | None = None) -> None:
        self.app = app
        self.settings = settings.rate_limits
        self.refused = RefusedAddresses()
        self.decisions = Counter(
            "aggregator_rate_limit_decisions", "Rate limiter decisions by route class",
            ["route_class", "outcome"], registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route_class = (classify(scope["method"], scope["path"])
                       if scope["type"] == "http" and self.settings.enabled else None)
        services = getattr(scope["app"].state, "services", None) if route_class else None
        if route_class is None or not isinstance(services, Services):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        subject: str | None = None  # the client address charged for a failed API key
        if route_class is RouteClass.LINK:
            try:
                decision = await self._link(scope, services)
            except Exception:  # outside the error boundary: never fail the request here
                log.exception("rate limit: deciding a link request failed; letting it through")
                decision = None
            if decision is not None and not decision.granted:
                await _refusal_page(decision, state.get("request_id"))(scope, receive, send)
                return
            state[_DECISION] = decision
        else:
            address = client_address(scope, self.settings.trusted_proxies)
            subject = subject_of(address) if address is not None else None
            wait = self.refused.wait(subject) if subject is not None else None
            if wait is not None:
                await self._too_many_failures(wait, scope["path"])(scope, receive, send)
                return
            state[_GATE] = _Gate(self, services, scope)
        status = 0

        async def send_with_fields(message: Message) -> None:
            nonlocal status
            decision = state.get(_DECISION)
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if isinstance(decision, Decision):
                    headers = MutableHeaders(scope=message)
                    for name, value in decision.headers().items():
                        if name not in headers:
                            headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_fields)
        if status == 401 and subject is not None:
            await self._failed_authentication(services, subject)

    async def _failed_authentication(self, services: Services, subject: str) -> None:
        """Charge a 401 to its address; remember a refusal (see :mod:`.failures`)."""
        region = services.router.regions[0]
        digest = services.custody[region].hasher.digest("rate_limit_client", subject)
        try:
            decision = await self.decide(services, RouteClass.UNAUTHENTICATED, region,
                                         f"ip:{digest.hex()[:32]}",
                                         self.limit(RouteClass.UNAUTHENTICATED))
        except Exception:  # the answer is sent: never let bookkeeping fail the request
            log.exception("rate limit: charging a failed authentication failed")
            return
        if decision is not None and not decision.granted:
            self.refused.refuse(subject, decision.retry_after)

    def _too_many_failures(self, wait: int, path: str) -> ProblemResponse:
        limit = self.limit(RouteClass.UNAUTHENTICATED)
        fields = Decision(RouteClass.UNAUTHENTICATED, limit, Level(False, 0.0)).headers()
        fields.update({"RateLimit": f'"unauthenticated";r=0;t={wait}', "Retry-After": str(wait)})
        self.decisions.labels(RouteClass.UNAUTHENTICATED.value, "limited").inc()
        return problem(
            PROBLEM_TYPES["rate_limited"], headers=fields, instance=path,
            detail=f"too many failed authentications from this address; retry after {wait} s",
            extra={"violated-policies": [RouteClass.UNAUTHENTICATED.value]},
        )

    def limit(self, route_class: RouteClass, app_id: str | None = None) -> RateLimit:
        own = self.settings.applications.get(app_id or "", {})
        return own.get(route_class.value) or self.settings.classes[route_class.value]

    async def decide(self, services: Services, route_class: RouteClass, region: str,
                     bucket: str, limit: RateLimit) -> Decision | None:
        store = cast(BucketStore | None, services.extra.get(STORE_KEY))
        if store is None:
            store = open_store(self.settings, services)
            services.extra[STORE_KEY] = store
            services.close_on_exit(store.close)  # a Redis pool would leak its sockets
        try:
            level = await store.take(region, f"{route_class.value}:{bucket}", limit)
        except RateLimitStoreUnavailable as exc:
            log.warning("rate limit store unavailable; letting the request through (%s)", exc)
            self.decisions.labels(route_class.value, "store_error").inc()
            return None
        self.decisions.labels(route_class.value, "granted" if level.granted else "limited").inc()
        return Decision(route_class, limit, level)

    async def _link(self, scope: Scope, services: Services) -> Decision | None:
        region = services.router.regions[0]  # one budget per address, whatever the token
        address = client_address(scope, self.settings.trusted_proxies)
        if address is None:
            return None  # no peer (a test transport without one): nothing to charge
        # An address is personal data: the bucket holds an HMAC under the region's pepper.
        digest = services.custody[region].hasher.digest("rate_limit_client",
                                                        subject_of(address))
        return await self.decide(services, RouteClass.LINK, region, f"ip:{digest.hex()[:32]}",
                                 self.limit(RouteClass.LINK))


def _refusal_page(decision: Decision, request_id: object) -> Any:
    from aggregator.link.pages import HEADERS, message_page

    page = message_page(
        "Too many attempts", "This device has made too many requests in a short time.",
        status=429, request_id=str(request_id) if request_id else None,
        advice=f"Please wait {decision.retry_after} seconds, then reload the page.",
    )
    page.headers.update({**HEADERS, **decision.headers()})
    return page


async def admit_application(request: Request, app_id: str, region: str) -> None:
    """Charge the authenticated application for this ``/v1`` request, or raise 429.

    A no-op when no :class:`RateLimitMiddleware` runs (limits disabled, or an app
    built without it).
    """
    gate = request.scope.get("state", {}).get(_GATE)
    if not isinstance(gate, _Gate):
        return
    route_class = classify(request.method, request.url.path)
    if route_class is None:
        return
    limiter = gate.limiter
    decision = await limiter.decide(gate.services, route_class, region, app_id,
                                    limiter.limit(route_class, app_id))
    gate.scope["state"][_DECISION] = decision
    if decision is not None and not decision.granted:
        raise RateLimited(decision)
