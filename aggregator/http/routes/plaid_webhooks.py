"""``POST /webhooks/plaid/{region}``: Plaid's webhooks, verified before anything else.

Unauthenticated by API key (Plaid holds none): the ``Plaid-Verification`` JWS is the
authentication (:mod:`aggregator.plaid.receiver`). Every refusal answers the same
generic problem so a prober learns nothing about which check failed; the reason goes
to the log and the ``aggregator_plaid_webhooks{outcome=…}`` counter. A refusal that is
only "not now" (the webhook's key could not be fetched yet, or Plaid's key endpoint is
down) answers 503 with ``Retry-After``, so Plaid retries instead of reading a permanent
400 (README, "Plaid webhooks: keys"). Verified webhooks, duplicates and orphans all get
200, so Plaid stops retrying.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from aggregator.http.metrics import HttpMetrics
from aggregator.http.problems import ProblemType, problem, status_problem
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.plaid.receiver import PlaidWebhooks, Receipt
from connectors import RejectReason, WebhookRejected

SERVICE_KEY = "plaid_webhooks"  # Services.extra key of the PlaidWebhooks receiver
_REJECTED = ProblemType("webhook_rejected", 400, "Webhook rejected",
                        "The webhook did not pass verification.")
_RETRY = ProblemType("webhook_retry", 503, "Webhook not verifiable yet",
                     "The webhook's signing key cannot be checked now; retry later.")


#: The three answers, rendered once.
_ANSWERS = {r: json.dumps({"status": r.value}, separators=(",", ":")).encode() for r in Receipt}


class _TooLarge(Exception):
    pass


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
            response=None, auth=False, errors=(400, 413, 503), tags=("webhooks",),
            path_params={"region": "The region whose Plaid credentials the Item uses."},
        )),
    ]
