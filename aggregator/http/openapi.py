"""The OpenAPI 3.1 document, generated from the app's own routes and body dataclasses.

Built once in :func:`~aggregator.http.app.create_app`, which therefore refuses to build
an app with an undocumented route: every route must be an
:class:`~aggregator.http.routing.ApiRoute` or say ``include_in_schema=False``.
Schemas are JSON Schema 2020-12 (OpenAPI 3.1 §4.8.24), from
:func:`aggregator.http.schema.json_schema`, the same declarations that validate requests.
Every request body and response carries a whole ``example``, built from those schemas
(:mod:`aggregator.http.examples`).
"""

from __future__ import annotations

import dataclasses
import http
from collections.abc import Iterable
from typing import Any, get_type_hints

from starlette.routing import BaseRoute, Route

from aggregator.http.examples import add_examples, media_types
from aggregator.http.idempotency import HEADER, MAX_LENGTH, REPLAYED
from aggregator.http.problems import MEDIA_TYPE
from aggregator.http.ratelimit.policy import RouteClass, classify
from aggregator.http.routing import ApiRoute, Operation
from aggregator.http.schema import json_schema


class UndocumentedRoute(TypeError):
    """Raised at app creation for a route that OpenAPI cannot describe."""


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document; more extension members may appear.",
    "required": ["type", "title", "status", "request_id"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "format": "uri-reference"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["detail"],
                "properties": {
                    "detail": {"type": "string"},
                    "pointer": {"type": "string", "description": "JSON Pointer into the body"},
                    "parameter": {"type": "string", "description": "A query parameter"},
                },
            },
        },
    },
    "additionalProperties": True,
}


#: draft-ietf-httpapi-ratelimit-headers-11 §3-4, and RFC 9110 §10.2.3 (Retry-After).
RATE_LIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Policy": {
        "description": "The route class's bucket: `\"read\";q=<burst>;w=<seconds to refill>`.",
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": "What is left: `\"read\";r=<requests>;t=<seconds until full>`.",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.", "schema": {"type": "integer"},
    },
}


def _header_refs(*names: str) -> dict[str, Any]:
    return {n: {"$ref": f"#/components/headers/{n}"} for n in names}


IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": HEADER, "in": "header", "required": False,
    "description": "A key of your choice, sent again with every retry of this request: "
                   "the first answer (not a 5xx or a 429) is kept for 24 hours and replayed "
                   "to retries with the same key and request, which do no work again. "
                   "The same key with another request is a 422; while the first request "
                   "is still working, a 409 with Retry-After.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH,
               "pattern": "^[\\x20-\\x7E]+$"},
}


def build_openapi(routes: Iterable[BaseRoute], *, title: str, version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if isinstance(route, ApiRoute):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                item = paths.setdefault(route.path_format, {})
                item[method.lower()] = _operation(route, route.operation, schemas)
        elif getattr(route, "include_in_schema", True):
            path = getattr(route, "path", repr(route))
            raise UndocumentedRoute(
                f"route {path} is not an ApiRoute; declare its Operation or pass "
                "include_in_schema=False"
            )
    document = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"apiKey": {
                "type": "http", "scheme": "bearer",
                "description": "An application API key (`agk_…`) from "
                               "`aggregator apps create`.",
            }},
            "headers": {"RequestId": {
                "description": "The request's id; quote it when reporting a problem.",
                "schema": {"type": "string"},
            }, "IdempotentReplayed": {
                "description": "`true` when the answer is the stored answer to an earlier "
                               "request with the same Idempotency-Key.",
                "schema": {"type": "string", "enum": ["true"]},
            }, **RATE_LIMIT_HEADERS},
        },
    }
    add_examples(document)
    return document


def _operation(route: Route, op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": route.name,
        "summary": op.summary,
        "tags": list(op.tags),
        "security": [{"apiKey": []}] if op.auth else [],
        "parameters": _parameters(route, op, schemas),
        "responses": _responses(route, op, schemas),
    }
    if op.description:
        out["description"] = " ".join(op.description.split())
    for cls in op.documents:
        json_schema(cls, schemas)
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": json_schema(op.body, schemas)},
        }}
    elif op.form:
        out["requestBody"] = {"required": True, "content": {
            # Which fields a form carries depends on the case (a bank's error or its
            # code); the handler checks them, so none is promised as required.
            "application/x-www-form-urlencoded": {"schema": {
                "type": "object",
                "properties": {name: {"type": "string", "description": description}
                               for name, description in op.form.items()},
            }},
        }}
    for where, media in media_types(out):
        if where in op.examples:
            media["example"] = op.examples[where]
    return out


def _parameters(route: Route, op: Operation, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
         **({"description": op.path_params[name]} if name in op.path_params else {})}
        for name in route.param_convertors
    ]
    params.extend(
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
         "description": description}
        for name, description in op.query_params.items()
    )
    if getattr(route, "idempotent", False):
        params.append(IDEMPOTENCY_PARAMETER)
    if op.query is not None:
        hints = get_type_hints(op.query)
        for f in dataclasses.fields(op.query):
            schema = json_schema(hints[f.name], schemas, f.metadata)
            description = schema.pop("description", None)
            params.append({
                "name": f.name, "in": "query", "schema": schema,
                "required": f.default is dataclasses.MISSING,
                **({"description": description} if description else {}),
            })
    return params


def _link_limited(route: Route) -> bool:
    return any(classify(method, route.path) is RouteClass.LINK for method in route.methods or ())


def _responses(route: Route, op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    headers = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}
    idempotent = bool(getattr(route, "idempotent", False))
    success: dict[str, Any] = {"description": op.summary, "headers": {
        **headers,
        **({REPLAYED: {"$ref": "#/components/headers/IdempotentReplayed"}} if idempotent
           else {}),
    }}
    if op.response is not None:
        success["content"] = {op.media_type: {"schema": json_schema(op.response, schemas)}}
    elif 300 <= op.status < 400:  # a redirect: its Location is the answer, it has no body
        success["headers"]["Location"] = {
            "description": "Where the browser goes next.", "schema": {"type": "string"}}
    elif op.media_type.endswith("+json"):
        success["content"] = {op.media_type: {"schema": {"type": "object"}}}
    elif op.media_type != "application/json":
        success["content"] = {op.media_type: {"schema": {"type": "string"}}}
    statuses = set(op.errors) | {500}
    if op.auth:
        statuses.add(401)
    if op.auth or _link_limited(route):  # every API call, and the Link pages per address
        statuses.add(429)
        success["headers"] = {**success["headers"],
                              **_header_refs("RateLimit-Policy", "RateLimit")}
    if route.param_convertors:
        statuses.add(404)
    if op.body is not None:
        statuses |= {400, 413, 415, 422}
    if op.query is not None:
        statuses.add(422)
    if idempotent:
        statuses |= {400, 409, 422}
    # A page a person reads (the hosted Link flow) answers its errors with HTML pages
    # quoting the request id, not with problem documents: say so rather than promise JSON.
    error_content = (
        {"text/html": {"schema": {"type": "string"}}} if op.media_type == "text/html"
        else {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    )
    responses: dict[str, Any] = {str(op.status): success}
    for status in sorted(statuses):
        limited = _header_refs("RateLimit-Policy", "RateLimit", "Retry-After")
        responses[str(status)] = {
            "description": http.HTTPStatus(status).phrase,
            "headers": {**headers, **limited} if status == 429 else headers,
            "content": {media: dict(body) for media, body in error_content.items()},
        }
    return responses
