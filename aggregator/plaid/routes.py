"""The Plaid piece's routes: Plaid's webhooks, and finishing a Plaid link session.

``POST /webhooks/plaid/{region}``: unauthenticated by API key (Plaid holds none): the
``Plaid-Verification`` JWS is the authentication (:mod:`aggregator.plaid.receiver`).
Every refusal answers the same generic problem so a prober learns nothing about which
check failed; the reason goes to the log and the ``aggregator_plaid_webhooks{outcome=…}``
counter. A refusal that is only "not now" (the webhook's key could not be fetched yet,
or Plaid's key endpoint is down) answers 503 with ``Retry-After``, so Plaid retries
instead of reading a permanent 400 (README, "Plaid webhooks: keys"). Verified webhooks,
duplicates and orphans all get 200, so Plaid stops retrying.

``POST /v1/plaid/exchange``: the app's backend calls it (API key) after Plaid Link's
``onSuccess`` in its frontend; :mod:`aggregator.plaid.link` does the work. The public
token is a short-lived bearer secret: it travels only in this body, never in a URL or a
log line.

The composer (:mod:`aggregator.http.app`) includes :func:`routes`; what they read from
the process is :class:`~aggregator.plaid.needs.PlaidNeeds`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from aggregator.http.metrics import HttpMetrics
from aggregator.http.problems import (
    Conflict,
    FieldError,
    NotFound,
    ProblemType,
    ValidationFailed,
    problem,
    status_problem,
)
from aggregator.http.routes.owned import connection_view, owned_connection
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.schema import rules
from aggregator.http.views import ID, ConnectionOut
from aggregator.link.wiring import components
from aggregator.plaid.link import (
    PlaidLinkConflict,
    PlaidLinkNotFound,
    PublicTokenMissing,
    exchange,
)
from aggregator.plaid.needs import SERVICE_KEY
from aggregator.plaid.receiver import PlaidWebhooks, Receipt
from connectors import RejectReason, WebhookRejected
from vault import Secret

_REJECTED = ProblemType("webhook_rejected", 400, "Webhook rejected",
                        "The webhook did not pass verification.")
_RETRY = ProblemType("webhook_retry", 503, "Webhook not verifiable yet",
                     "The webhook's signing key cannot be checked now; retry later.")


#: The three answers, rendered once (what JSONResponse rendered for each, per request).
_ANSWERS = {r: json.dumps({"status": r.value}, separators=(",", ":")).encode() for r in Receipt}


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class WebhookReceived:
    """The answer to a verified webhook: what became of it (each ends Plaid's retries)."""

    status: Receipt = field(metadata=rules(
        example=Receipt.STORED.value,
        description="`stored` (a job for the worker), `duplicate` (coalesced into one "
                    "still pending) or `orphaned` (no connection of this region holds "
                    "the Item)."))


async def _read(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def post_plaid_webhook(call: Call) -> Response:
    request = call.request
    region = request.path_params["region"]
    receiver = call.services.extra.get(SERVICE_KEY)
    if not isinstance(receiver, PlaidWebhooks) or region not in receiver.verifiers:
        return status_problem(404, request.url.path)
    metrics = getattr(request.app.state, "metrics", None)
    if isinstance(metrics, HttpMetrics):
        receiver.expose(metrics.registry)  # counted on /metrics from the first webhook on
    limit = receiver.max_body_bytes(region)
    try:
        body = await _read(request, limit)
    except _TooLarge:
        body = b"\0" * (limit + 1)  # counted and logged as body_too_large by the verifier
    try:
        receipt = await receiver.receive(region, body, request.headers.get("plaid-verification"))
    except WebhookRejected as exc:
        if exc.reason is RejectReason.BODY_TOO_LARGE:
            return status_problem(413, request.url.path)
        if exc.retryable:
            wait = str(max(1, round(exc.retry_after or 1)))
            return problem(_RETRY, instance=request.url.path, headers={"Retry-After": wait})
        return problem(_REJECTED, instance=request.url.path)
    return Response(_ANSWERS[receipt], media_type="application/json")


@dataclass(frozen=True)
class PlaidExchange:
    """The link session Plaid Link ran for, and the public token its ``onSuccess`` gave."""

    link_session_id: str = field(metadata=rules(
        pattern=ID, description="`link_session_id` from `POST /v1/link/sessions`."))
    public_token: str | None = field(default=None, metadata=rules(
        min_length=1, max_length=512,
        description="Plaid Link's `public_token`; required for a new link, ignored in "
                    "update mode (the Item keeps its access token)."))


async def post_exchange(call: Call) -> ConnectionOut:
    """Exchange the public token and create the connection (update mode: repair it).

    The connection's ``connection.created`` (or ``connection.reauthorized``) event is
    committed with it; a used, expired or foreign session is refused and changes nothing.
    """
    body = call.body_as(PlaidExchange)
    services = call.services
    parts = components(services)
    try:
        done = await exchange(
            services.router, services.custody, parts.banks, parts.syncer, caller=call.caller,
            link_session_id=body.link_session_id,
            public_token=Secret(body.public_token) if body.public_token else None,
            request_id=call.request_id,
        )
    except PlaidLinkNotFound as exc:
        raise NotFound(str(exc)) from None
    except PlaidLinkConflict as exc:
        raise Conflict(str(exc)) from None
    except PublicTokenMissing as exc:
        raise ValidationFailed([FieldError(str(exc), pointer="#/public_token")]) from None
    region = services.router.region_of(done.connection_id)
    async with services.router.reader(region) as session:
        return connection_view(await owned_connection(session, done.connection_id, call.caller))


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/webhooks/plaid/{region}", post_plaid_webhook, "POST", Operation(
            description=(
                "Plaid's webhook for one region. The raw body is verified before anything "
                "else: the `Plaid-Verification` JWT must be ES256 with a known, unexpired "
                "key, at most five minutes old, and carry the body's SHA-256. Verified "
                "webhooks are stored and acted on by a worker (sync, re-consent, consent "
                "expiry); anything else is refused."
            ),
            summary="Receive a Plaid webhook (verified with Plaid-Verification)",
            response=WebhookReceived, auth=False, errors=(400, 413, 503),
            tags=("webhooks",),
            path_params={"region": "The region whose Plaid credentials the Item uses."},
        )),
        ApiRoute("/v1/plaid/exchange", post_exchange, "POST", Operation(
            summary="Finish a Plaid link session with Plaid Link's public token",
            description=post_exchange.__doc__, body=PlaidExchange, response=ConnectionOut,
            errors=(404, 409, 422, 502, 503), tags=("link",),
        )),
    ]
