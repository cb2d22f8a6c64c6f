"""``Idempotency-Key`` on every ``POST`` under ``/v1`` and on ``DELETE /v1/users/{id}``.

A network glitch between an app and the gateway must never create two users, two link
sessions or two erasure requests: the app sends a key of its choice with the request
and sends the same key with every retry (draft-ietf-httpapi-idempotency-key-header-07).
:class:`~aggregator.http.routing.ApiRoute` runs such a request through
:func:`run_idempotently` after authenticating it, so the key is scoped to the calling
application, and the region of the resource holds the record
(:mod:`aggregator.idempotency`):

- the first request does the work; its answer (status, ``Content-Type``, ``Location``,
  body) is kept for 24 hours, unless it is a 5xx (the retry should do the work again)
  or a 429 (it asks for a later retry, which a replay would refuse);
- a retry with the same key and the same request (method, path, query, JSON body) gets
  that answer again, with ``Idempotent-Replayed: true``, and nothing is done again;
- the same key with a different request is a 422 problem (draft §2.7);
- while the first request is still working, a second one is a 409 problem with
  ``Retry-After`` (draft §2.7); a first request that crashed holds the key only until
  its lock expires;
- a malformed key is a 400 problem naming the header (draft §2.1: 1 to 255 printable
  ASCII characters, bare or as a Structured Field String, RFC 8941 §3.3.3).

A first request that crashed after its work was committed but before its answer was
stored leaves no answer: once its lock expires (5 minutes), a retry runs the operation
again. Creating a user then answers 409 naming the user (an external id is unique per
application), an erasure answers with the same erasure request; a link session is made
a second time (the first, never shown to anyone, expires unused after ten minutes).

Requests refused before the operation starts (authentication, a malformed key, a body
that does not parse or validate) store nothing: they did no work, and the same request
gets the same refusal anyway. The region is the one the path's id names, else the
body's ``region``, else the region of the body's ``user_id``, ``connection_id`` or
``link_session_id``, else the first configured region (operations on the application
itself, which every region holds). A key is therefore scoped per region: the same key
used for two requests about resources in two regions is two keys.

Answers hold secrets shown once (``whsec_…``, link tokens): every stored answer is
sealed, none in clear, and a replay shows the secret again only to the application
that made it, with its API key and its key, within 24 hours. That is deliberate: an app
whose first answer was lost in transit must still learn the secret it now signs with.

``aggregator_idempotency_keys_total{outcome}`` on the app's ``/metrics`` counts what
came back with a known key (:class:`IdempotencyMetrics`): replays show how often apps
retry (a network or a client in trouble), ``in_use`` refusals retries racing their first
request, ``reused`` refusals a client that recycles keys, a bug worth finding early.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import Response

from aggregator.errors import InvalidId
from aggregator.http.logs import current_request_id
from aggregator.http.problems import (
    MEDIA_TYPE,
    FieldError,
    HttpProblem,
    problem_for,
    problem_type_of,
)
from aggregator.http.services import Services
from aggregator.idempotency import (
    Busy,
    Claimed,
    IdempotencyPolicy,
    IdempotencyStore,
    Mismatch,
    Replay,
    StoredResponse,
    fingerprint,
    key_digest,
)
from aggregator.ids import ApplicationId, UserId, parse_id

log = logging.getLogger("aggregator.http")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_LENGTH = 255
#: ``Services.extra`` keys: an :class:`IdempotencyPolicy` (tests shorten its times), and
#: the process's :class:`IdempotencyStore`, built on first use.
POLICY_KEY = "idempotency_policy"
STORE_KEY = "idempotency_store"
#: Response headers worth replaying; the middleware adds the rest to every answer.
KEPT_HEADERS = ("content-type", "location")
_REGION_FIELDS = ("user_id", "connection_id", "link_session_id")


class IdempotencyMetrics:
    """``aggregator_idempotency_keys_total{outcome}``: ``replayed`` (a stored answer sent
    again), ``in_use`` (409, the first request still working), ``reused`` (422, the key
    came with another request). A closed set of labels, each present from the start."""

    OUTCOMES: Final = ("replayed", "in_use", "reused")
    _by_registry: ClassVar[WeakKeyDictionary[CollectorRegistry, IdempotencyMetrics]] = (
        WeakKeyDictionary()
    )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> IdempotencyMetrics:
        """The one instance of ``registry``: a second would be a duplicate time series."""
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self.keys = Counter(
            "aggregator_idempotency_keys", "Requests with a known Idempotency-Key, by outcome",
            ["outcome"], registry=registry,
        )
        for outcome in self.OUTCOMES:
            self.keys.labels(outcome)

    def count(self, outcome: str) -> None:
        self.keys.labels(outcome).inc()


def _count(request: Request, outcome: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    registry = getattr(metrics, "registry", None)
    if isinstance(registry, CollectorRegistry):
        IdempotencyMetrics.of(registry).count(outcome)


class InvalidIdempotencyKey(HttpProblem):
    """Raised for an ``Idempotency-Key`` header that is empty, too long, not printable
    ASCII, or sent more than once."""

    code = "invalid_idempotency_key"


class IdempotencyKeyReused(HttpProblem):
    """Raised when a key comes back with a different method, path or body."""

    code = "idempotency_key_reused"


class IdempotencyKeyInUse(HttpProblem):
    """Raised while the first request with the key is still being processed."""

    code = "idempotency_key_in_use"


def applies(method: str, path: str) -> bool:
    """Whether an operation takes ``Idempotency-Key``: every ``POST`` under ``/v1`` and
    ``DELETE /v1/users/{id}`` (erasure), the operations that create something."""
    return (method == "POST" and path.startswith("/v1/")) or \
        (method == "DELETE" and path == "/v1/users/{id}")


def _bad(detail: str) -> InvalidIdempotencyKey:
    return InvalidIdempotencyKey(
        f"the {HEADER} header {detail}",
        extra={"errors": [FieldError(detail, parameter=HEADER).as_json()]},
    )


def idempotency_key(request: Request) -> str | None:
    """The request's key, None without one; :class:`InvalidIdempotencyKey` if malformed."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    if len(values) != 1:
        raise _bad("must be sent once")
    value = values[0].strip(" \t")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = _sf_string(value[1:-1])
    if not 1 <= len(value) <= MAX_LENGTH:
        raise _bad(f"must hold 1 to {MAX_LENGTH} characters")
    if not all(" " <= c <= "~" for c in value):
        raise _bad("must hold printable ASCII characters only")
    return value


def _sf_string(inner: str) -> str:
    # RFC 8941 §4.2.5: inside a String only \" and \\ are escapes; a bare " ends it.
    out, chars = [], iter(inner)
    for c in chars:
        if c == "\\":
            c = next(chars, "")
            if c not in ('"', "\\"):
                raise _bad("is a malformed Structured Field String")
        elif c == '"':
            raise _bad("is a malformed Structured Field String")
        out.append(c)
    return "".join(out)


def store_of(services: Services) -> IdempotencyStore:
    found = services.extra.get(STORE_KEY)
    if isinstance(found, IdempotencyStore):
        return found
    policy = services.extra.get(POLICY_KEY)
    store = IdempotencyStore(
        services.router, {r: c.hasher for r, c in services.custody.items()},
        policy if isinstance(policy, IdempotencyPolicy) else None,
        custody=services.custody,
    )
    services.extra[STORE_KEY] = store
    return store


def region_for(request: Request, services: Services, body: Any) -> str:
    """The region of the resource (see the module docstring)."""
    regions = services.router.regions
    found = _id_region(list(request.path_params.values()), regions)
    if found is not None:
        return found
    region = getattr(body, "region", None)
    if isinstance(region, str) and region in regions:
        return region
    named = [getattr(body, name, None) for name in _REGION_FIELDS]
    return _id_region(named, regions) or regions[0]


def _id_region(values: list[object], regions: tuple[str, ...]) -> str | None:
    for value in values:
        if not isinstance(value, str):
            continue
        try:
            region = parse_id(value, regions=regions).region
        except InvalidId:
            continue
        if region is not None:
            return region
    return None


def _canonical(raw: bytes) -> str:
    try:
        return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return raw.decode("latin-1")  # not JSON: the bytes themselves, one to one


def _subject(request: Request, body: Any, answer: bytes, region: str) -> UserId | None:
    """The user a successful answer is about, if any, in ``region``.

    Not for ``DELETE /v1/users/{id}``: its answer names only the erasure request, which
    outlives the user, and so must its record, or the erasure would delete the record
    and a retry would run again.
    """
    if request.method == "DELETE":
        return None
    values: list[object] = [*request.path_params.values(), getattr(body, "user_id", None)]
    try:
        document = json.loads(answer) if answer else None
    except (UnicodeDecodeError, ValueError):
        document = None
    if isinstance(document, dict):
        values += [document.get("user_id"), document.get("id")]
    for value in values:
        if isinstance(value, str) and value.startswith(f"usr_{region}_"):
            return UserId(value)
    return None


def _replayed(stored: StoredResponse) -> Response:
    body = stored.body
    if {n.lower(): v for n, v in stored.headers}.get("content-type", "").startswith(MEDIA_TYPE):
        # A replayed problem names the retry's request id (RFC 9457 §3.2 member), like its
        # X-Request-Id header; the first request's id is logged with the replay.
        document = json.loads(body)
        log.info("replaying the answer to %s", document.get("request_id"))
        document["request_id"] = current_request_id()
        body = json.dumps(document, separators=(",", ":")).encode()
    response = Response(body, status_code=stored.status)
    for name, value in stored.headers:
        response.headers[name] = value
    response.headers[REPLAYED] = "true"
    return response


async def run_idempotently(
    request: Request, services: Services, app_id: ApplicationId, key: str, body: Any,
    respond: Callable[[], Awaitable[Response]],
) -> Response:
    """``respond()`` at most once per key and request; its answer replayed afterwards."""
    region = region_for(request, services, body)
    store = store_of(services)
    hasher = store.hashers[region]
    raw = await request.body()
    print_ = fingerprint(hasher, app_id, request.method, request.url.path,
                         request.url.query, _canonical(raw))
    request_id = str(request.state.request_id)
    outcome = await store.claim(region, app_id, key_digest(hasher, app_id, key), print_,
                                request_id=request_id)
    if isinstance(outcome, Replay):
        _count(request, "replayed")
        return _replayed(outcome.response)
    if isinstance(outcome, Mismatch):
        _count(request, "reused")
        raise IdempotencyKeyReused(
            f"this {HEADER} was used for a different request; use a new key")
    if isinstance(outcome, Busy):
        _count(request, "in_use")
        raise IdempotencyKeyInUse(
            f"a request with this {HEADER} is still being processed; retry later",
            headers={"Retry-After": str(outcome.retry_after)})
    return await _first(request, store, outcome, body, respond)


async def _first(request: Request, store: IdempotencyStore, claim: Claimed, body: Any,
                 respond: Callable[[], Awaitable[Response]]) -> Response:
    try:
        response = await respond()
    except Exception as exc:
        kind = problem_type_of(exc)
        if kind.status >= 500:
            await store.release(claim)
            raise
        # Rendered here rather than by the error boundary, so the answer can be stored.
        log.info("request failed: %s (%s)", kind.code, type(exc).__name__)
        response = problem_for(exc, instance=request.url.path)
    content = getattr(response, "body", None)
    if response.status_code >= 500 or response.status_code == 429 \
            or not isinstance(content, bytes):
        await store.release(claim)
        return response
    headers = tuple((n, response.headers[n]) for n in KEPT_HEADERS if n in response.headers)
    user = _subject(request, body, content, claim.region) \
        if response.status_code < 300 else None
    stored = StoredResponse(response.status_code, headers, content,
                            str(request.state.request_id))
    if not await store.complete(claim, stored, user):
        log.warning("idempotency claim lost before its answer was stored")
    return response
