"""Whole examples for every operation of ``/openapi.json``, built from its own schemas.

Issue 18 asks ``/docs`` for an example request and response per operation. Hand-written
JSON would drift from the dataclasses that validate requests, so examples are *built*:

- a JSON body (request or success response) from its schema, field by field, taking each
  field's own example (``rules(example=…)``, published as ``examples``), an enum's first
  value, or a typical value for a format (date-time, date, decimal); a string field
  with none of these has no example, and the operation then lacks one;
- a problem response (RFC 9457) from :func:`aggregator.http.problems.problem`, the
  function that renders real ones, for the documented type of that status;
- what the schemas cannot say (a form post, an HTML page, the metrics text) from the
  operation's own ``Operation.examples``.

``tests/aggregator/http/test_openapi_examples.py`` validates every example against its
schema (JSON Schema 2020-12, the dialect of OpenAPI 3.1) and fails for an operation
without a request, success or problem example.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from aggregator.http.logs import bind_request_id, unbind_request_id
from aggregator.http.problems import PROBLEM_TYPES, FieldError, problem, status_problem

#: The request id in example problems (the shape ``RequestIdMiddleware`` issues).
EXAMPLE_REQUEST_ID = "req_27navtlwhrzpakt72trosxyr2e"
#: Values of path parameters in example ``instance`` members, by the segment before them.
_PATH_EXAMPLES = {
    "users": "usr_eu_4kq3ajxmvzd2tq5w6n7ypc3e2a",
    "connections": "con_eu_7u67ztg3wonvlflnxte242dddm",
    "accounts": "acc_eu_775eazj22nnogakcfha6za4sem",
    "erasure-requests": "era_eu_d5qkz3wq7h2m4xj6c4f2nbvy3u",
    "events": "msg_eu_n3b6xq2v7c4kfz5w2dj7mrt6qa",
    "link": "lnk_eu_6k2xw3qz7mv4ncj5rdt2yb7hfa",
    "plaid": "eu",
    "problems": "not_found",
}
#: The problem type shown for each status; the first documented one unless named here.
_PROBLEM_FOR_STATUS = {400: "malformed_json", 404: "not_found", 409: "conflict",
                       429: "rate_limited", 502: "bank_unavailable"}
_FORMATS = {"date-time": "2026-03-02T09:30:00Z", "date": "2026-03-02", "decimal": "-12.50"}
HTML_ERROR_EXAMPLE = (
    '<!doctype html><html lang="en"><head><title>This link has expired</title></head>'
    "<body><main><h1>This link has expired</h1><p>Ask the app for a new one.</p>"
    f"<p>Request id: {EXAMPLE_REQUEST_ID}</p></main></body></html>"
)


_CON, _USR = _PATH_EXAMPLES["connections"], _PATH_EXAMPLES["users"]
_ACC = _PATH_EXAMPLES["accounts"]
# An example for the docs in the shape of a link token; no gateway ever issued it.
_LINK_TOKEN = "lnk_eu_3bmfqf7ymvogbydqbyg2ov4s4hykxoq5xs5buzkr6oocaazriz5q"  # noqa: S105
_BANK_REQUEST = "5d0c6e1e-3b9a-4f0e-8c2f-7a1b9e4d2c6f"
_NULL = object()  # a vocabulary entry may be null, which is not "no entry"
#: One value per field name for the whole API (``Class.field`` where a name means
#: different things); a field's own ``rules(example=…)`` wins. Each value is still
#: validated against the field's schema, so a wrong one fails the test, not the reader.
VOCABULARY: Mapping[str, Any] = {
    "connection_id": _CON, "user_id": _USR, "account_id": _ACC,
    "erasure_request_id": _PATH_EXAMPLES["erasure-requests"],
    "link_session_id": "lnk_eu_6k2xw3qz7mv4ncj5rdt2yb7hfa",
    "sync_id": "syn_eu_cisoanvqjhzqhg2x33pdogxbri",
    "ErasureRequestOut.id": _PATH_EXAMPLES["erasure-requests"],
    "EventOut.id": _PATH_EXAMPLES["events"], "SyncRunOut.id": "syn_eu_cisoanvqjhzqhg2x33pdogxbri",
    "bank_id": "sandbox-eu", "region": "eu", "currency": "EUR", "locale": "en",
    "name": "Everyday Account", "mask": "4321",
    "message": "The bank did not allow reading this resource under the consent.",
    "status": "active", "UserErasedEventData.status": "completed",
    "reason": "invalid_grant", "LinkFailedEventData.reason": "access_denied",
    "SyncFailedEventData.reason": "bank_unavailable",
    "SyncPartialEventData.reason": "not_permitted",
    "status_reason": _NULL, "in_flight": _NULL, "RevocationOut.last_error": "bank_unavailable",
    "consent_expires_at": "2026-06-01T00:00:00Z",
    "error_code": "not_permitted", "trigger": "on_demand",
    "request_id": _BANK_REQUEST, "ReceiptOut.request_id": EXAMPLE_REQUEST_ID,
    "user_digest": "9f2c4e1ab7d35c08e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7",
    "ReceiptOut.counts": {"connections": 1, "accounts": 2, "transactions": 140},
    "redirect_uri": "https://app.example/linked",
    "url": "https://api.example.com/webhooks",
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "link_token": _LINK_TOKEN, "link_url": f"https://gateway.example/link/{_LINK_TOKEN}",
    "PlaidLinkOut.link_token": "link-sandbox-af1a0311-da53-4636-b754-dd15cc058176",
    "public_token": "public-sandbox-2c1a4b6e-8f3d-4b1e-9a7c-5d2e1f0a3b4c",
    "type": "connection.created", "delivery": "delivered",
    "next_cursor": "djF8YWNjX2V1Xzc3NWVhemoyMm5ub2dha2NmaGE2emE0c2VtfDIwMjYtMDMtMDJ8dHhuX2V1X3E"
                   "yZG0zd3o1bGZ6Nng3dXZya2NianF5aHll",
    "description": "Card payment, Café Rosa", "counterparty": "Café Rosa",
    "merchant_category": "5812", "external_id": "customer-4711",
    "ProblemTypeOut.type": "/problems/not_found", "ProblemTypeOut.title": "Not found",
    "ProblemTypeOut.description": "Nothing with this id exists for the calling application.",
    "ProblemTypeOut.status": 404,
}


class NoExample(LookupError):
    """Raised for a schema that gives no example for a value (named by its JSON Pointer)."""


def example_of(schema: Mapping[str, Any], components: Mapping[str, Any],
               at: str = "#", names: tuple[str, ...] = ()) -> Any:
    """A value valid under ``schema``, made of the schema's own examples.

    ``names`` are the vocabulary keys of the value (``("ConnectionOut.id", "id")``).
    """
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _object(components[name], components, at, name)
    if schema.get("examples"):
        return schema["examples"][0]
    if "enum" in schema:
        return next(v for v in schema["enum"] if v is not None)
    for key in names:
        if key in VOCABULARY:
            value = VOCABULARY[key]
            return None if value is _NULL else value
    if "anyOf" in schema:
        branch = next(s for s in schema["anyOf"] if s.get("type") != "null")
        return example_of(branch, components, at, names)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        return _object(schema, components, at, "")
    if kind == "array":
        return [example_of(schema.get("items", {}), components, f"{at}/0", names)]
    if kind == "integer":
        return max(schema.get("minimum", 1), min(1, schema.get("maximum", 1)))
    if kind == "boolean":
        return True
    if kind == "string" and schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    raise NoExample(f"{at}: no example, enum or known format")


def _object(schema: Mapping[str, Any], components: Mapping[str, Any], at: str,
            cls: str) -> Any:
    if schema.get("examples"):
        return schema["examples"][0]
    props = schema.get("properties", {})
    values = schema.get("additionalProperties")
    if not props and isinstance(values, Mapping):  # a map; most of ours are by region
        return {"eu": example_of(values, components, f"{at}/eu")}
    return {name: example_of(prop, components, f"{at}/{name}", (f"{cls}.{name}", name))
            for name, prop in props.items()}


def problem_example(status: int, path: str, operation: Mapping[str, Any],
                    components: Mapping[str, Any]) -> dict[str, Any]:
    """The problem document the gateway sends for ``status`` on ``path``."""
    invalid = _first_invalid(operation, components) if status == 422 else None
    code = _PROBLEM_FOR_STATUS.get(status) or next(
        (t.code for t in PROBLEM_TYPES.values() if t.status == status), None)
    if status == 422 and invalid is None:  # no body, no query: only a reused key is a 422
        code = "idempotency_key_reused"
    token = bind_request_id(EXAMPLE_REQUEST_ID)
    try:
        if code is None:  # a status without a type of ours: "about:blank" (RFC 9457 §4.2.1)
            rendered = status_problem(status, instance_of(path))
        elif invalid is not None:
            rendered = problem(PROBLEM_TYPES[code], detail="1 field failed validation",
                               instance=instance_of(path), extra={"errors": [invalid.as_json()]})
        else:
            rendered = problem(PROBLEM_TYPES[code], instance=instance_of(path))
    finally:
        unbind_request_id(token)
    document: dict[str, Any] = json.loads(bytes(rendered.body))
    return document


def instance_of(path: str) -> str:
    """``path`` with each ``{parameter}`` replaced by an example value."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.startswith("{"):
            parts[i] = _PATH_EXAMPLES.get(parts[i - 1], "eu")
    return "/".join(parts)


def _first_invalid(operation: Mapping[str, Any],
                   components: Mapping[str, Any]) -> FieldError | None:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is not None:
        if "$ref" in schema:
            schema = components[schema["$ref"].rsplit("/", 1)[-1]]
        name = (schema.get("required") or sorted(schema.get("properties", {})))[0]
        return FieldError("is required", pointer=f"#/{name}")
    query = [p for p in operation.get("parameters", []) if p["in"] == "query"]
    if query:
        return FieldError("unknown parameter", parameter="sort")
    return None


def media_types(operation: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (``requestBody`` or status, media type object) of an operation."""
    for media in operation.get("requestBody", {}).get("content", {}).values():
        yield "request", media
    for status, response in operation["responses"].items():
        for media in response.get("content", {}).values():
            yield status, media


def add_examples(document: dict[str, Any]) -> None:
    """Give every media type of every operation an ``example`` it does not have yet.

    One the schemas cannot give is left out; the test names the operation.
    """
    components = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for operation in item.values():
            for where, media in media_types(operation):
                if "example" in media:
                    continue
                try:
                    media["example"] = _example(where, path, operation, media, components)
                except NoExample:
                    continue


def _example(where: str, path: str, operation: Mapping[str, Any], media: Mapping[str, Any],
             components: Mapping[str, Any]) -> Any:
    schema = media.get("schema", {})
    if where != "request" and int(where) >= 400:
        if schema.get("$ref", "").endswith("/Problem"):
            return problem_example(int(where), path, operation, components)
        return HTML_ERROR_EXAMPLE  # the pages a person reads
    return example_of(schema, components)
