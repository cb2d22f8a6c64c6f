"""API routes that carry their own contract: auth, body and query schemas, responses.

An :class:`ApiRoute` is a Starlette ``Route`` for one method whose :class:`Operation`
says what it accepts and returns. The route enforces it (authenticates, parses and
validates the body and the query with :mod:`aggregator.http.schema`, encodes the
handler's dataclass) and ``/openapi.json`` publishes the very same declaration, so
every documented route is checked and every checked route is documented. A route of
the app that is neither an ``ApiRoute`` nor marked ``include_in_schema=False`` makes
the OpenAPI builder fail (:mod:`aggregator.http.openapi`). The operations that create
something (every ``POST`` under ``/v1``, ``DELETE /v1/users/{id}``) take an
``Idempotency-Key``, applied here once for all of them, after authentication
(:mod:`aggregator.http.idempotency`).

Example, for a route of the Link colleague::

    async def create_link_session(call: Call) -> LinkSessionOut:
        body = call.body_as(CreateLinkSession)
        ...

    ApiRoute("/v1/link/sessions", create_link_session, "POST", Operation(
        summary="Start a link session", body=CreateLinkSession,
        response=LinkSessionOut, status=201, tags=("link",),
    ))
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.errors import InvalidId
from aggregator.http.auth import authenticate
from aggregator.http.idempotency import applies, idempotency_key, run_idempotently
from aggregator.http.problems import MalformedJson, UnsupportedMediaType
from aggregator.http.ratelimit import admit_application
from aggregator.http.ratelimit.clientip import CLIENT_ADDRESS
from aggregator.http.schema import decode, decode_query, dumps
from aggregator.http.services import Services, services_of
from aggregator.ids import ApplicationId, parse_id

T = TypeVar("T")

Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(frozen=True)
class Operation:
    """An operation's contract, enforced by :class:`ApiRoute` and published in OpenAPI.

    ``response`` is a dataclass, or ``None`` for a body-less answer; ``media_type`` names a
    non-JSON response (``text/html`` for a page, ``text/plain`` for metrics), whose
    handler returns a Starlette ``Response`` itself. ``errors`` lists the problem
    statuses the operation documents besides the ones every route can answer.
    """

    summary: str
    response: type[Any] | None
    status: int = 200
    body: type[Any] | None = None
    query: type[Any] | None = None
    auth: bool = True
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    description: str | None = None
    media_type: str = "application/json"
    path_params: dict[str, str] = field(default_factory=dict)  # name -> description
    #: Optional string query parameters that are documented but not validated by
    #: ``query`` (name -> description): a redirect endpoint must tolerate what a bank adds.
    query_params: dict[str, str] = field(default_factory=dict)
    #: The fields of an HTML form the handler reads itself (name -> description),
    #: published as an ``application/x-www-form-urlencoded`` request body.
    form: dict[str, str] = field(default_factory=dict)
    #: Further dataclasses published under ``components.schemas`` because the response
    #: refers to them in words (e.g. each event type's payload).
    documents: tuple[type[Any], ...] = ()
    #: Whole examples the schemas cannot give (a form post, an HTML page, a text body),
    #: keyed ``"request"`` or by status (``"200"``); :mod:`aggregator.http.examples`
    #: builds every other one from the schemas.
    examples: dict[str, Any] = field(default_factory=dict)


@dataclass
class Call:
    """One authenticated, validated call: what a handler receives."""

    request: Request
    app_id: ApplicationId | None
    body: Any = None
    query: Any = None

    @property
    def services(self) -> Services:
        return services_of(self.request)

    @property
    def caller(self) -> ApplicationId:
        if self.app_id is None:
            raise RuntimeError("this operation is not authenticated")  # a route bug
        return self.app_id

    @property
    def request_id(self) -> str:
        return str(self.request.state.request_id)

    @property
    def client_ip(self) -> str | None:
        """The client's address for the audit trail, as the rate limiter sees it.

        :class:`~aggregator.http.ratelimit.clientip.ClientAddressMiddleware` parsed it:
        the socket peer, or what a trusted proxy forwarded; never a header from anyone else.
        """
        address = getattr(self.request.state, CLIENT_ADDRESS, None)
        return str(address) if address is not None else None

    def body_as(self, cls: type[T]) -> T:
        if not isinstance(self.body, cls):
            raise RuntimeError(f"the operation does not declare body={cls.__name__}")
        return self.body

    def query_as(self, cls: type[T]) -> T:
        if not isinstance(self.query, cls):
            raise RuntimeError(f"the operation does not declare query={cls.__name__}")
        return self.query

    def path_id(self, name: str, kind: str) -> tuple[str, str]:
        """The path parameter ``name`` as an id of ``kind`` and its region; else 404."""
        text = self.request.path_params[name]
        parsed = parse_id(text, kind=kind, regions=self.services.router.regions)
        if parsed.region is None:
            raise InvalidId("a global id names no region")
        return text, parsed.region


class ApiRoute(Route):
    """A route for one method, run through its :class:`Operation`."""

    def __init__(self, path: str, handler: Handler, method: str, operation: Operation,
                 *, name: str | None = None) -> None:
        self.operation = operation
        self.handler = handler
        #: Takes ``Idempotency-Key`` (:mod:`aggregator.http.idempotency`).
        self.idempotent = operation.auth and applies(method, path)
        idempotent = self.idempotent

        async def endpoint(request: Request) -> Response:
            return await _run(request, handler, operation, idempotent)

        super().__init__(path, endpoint, methods=[method], name=name or handler.__name__)


async def _run(request: Request, handler: Handler, op: Operation,
               idempotent: bool = False) -> Response:
    app_id = None
    if op.auth:
        services = services_of(request)
        region = _region_hint(request, services)
        app_id = await authenticate(request, services, region)
        request.state.app_id = app_id
        # Charged where it was authenticated: per application, route class and region.
        await admit_application(request, app_id, region or services.router.regions[0])
    key = idempotency_key(request) if idempotent else None
    call = Call(request, app_id)
    if op.query is not None:
        params = request.query_params
        call.query = decode_query(op.query, params, [k for k, _ in params.multi_items()])
    if op.body is not None:
        call.body = decode(op.body, await _json(request))
    if key is not None and app_id is not None:
        return await run_idempotently(request, call.services, app_id, key, call.body,
                                      lambda: _respond(call, handler, op))
    return await _respond(call, handler, op)


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson straight from the response dataclass: compact UTF-8 like
    Starlette's; on a page of 500 transactions ``json.dumps`` took 1.46 ms and orjson
    0.06 ms, and building dicts first most of the rest (bench/README.md)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


async def _respond(call: Call, handler: Handler, op: Operation) -> Response:
    result = await handler(call)
    if isinstance(result, Response):
        return result
    if op.response is None:
        return Response(status_code=op.status)
    return OrjsonResponse(result, status_code=op.status)


def _region_hint(request: Request, services: Services) -> str | None:
    """The region to authenticate in: the one a path id names, so that one region's
    outage never stops calls about another region's users."""
    for value in request.path_params.values():
        try:
            region = parse_id(str(value), regions=services.router.regions).region
        except InvalidId:
            continue
        if region is not None:
            return region
    return None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; refusing them removes the ambiguity.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedJson(f"duplicate key {key[:40]!r} in a JSON object")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise MalformedJson(f"{name} is not JSON (RFC 8259 §6)")


async def _json(request: Request) -> Any:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/")
                                           and media.endswith("+json")):
        raise UnsupportedMediaType("send the body as application/json")
    raw = await request.body()
    try:
        return json.loads(raw, object_pairs_hook=_reject_duplicates,
                          parse_constant=_no_constants)
    except MalformedJson:
        raise
    except RecursionError:
        raise MalformedJson("the JSON document nests too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        # ValueError covers JSONDecodeError and integers past the 4,300-digit limit.
        where = f" at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise MalformedJson(f"the body is not valid JSON{where}") from None
