"""RFC 9457 problem details: the one shape every error of the API takes.

A problem document carries ``type`` (``/problems/{code}``, served by the gateway so the
reference resolves to its description, §3.1.1), ``title``, ``status``, ``detail``,
``instance`` (the request path) and two extension members (§3.2): ``request_id``, to
quote to an operator, and ``errors``, one entry per bad field or parameter.

Errors reach the client through :func:`problem_for`, which maps by the error's class-level
``code`` (walking its MRO, so a subclass inherits its parent's status) for the three
packages' roots, :class:`~aggregator.errors.GatewayError`,
:class:`~vault.VaultError` and :class:`~connectors.ConnectorError`. A code that is not
mapped is a 500 whose detail says nothing about internals: messages of 5xx errors are
shown only for codes listed with ``expose=True``, because they name a bank or a
provider, never a secret, and help the caller decide to retry.
"""

from __future__ import annotations

import http
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.responses import JSONResponse

from aggregator.errors import GatewayError
from aggregator.http.logs import current_request_id

MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One documented kind of problem; ``/problems/{code}`` serves it."""

    code: str
    status: int
    title: str
    description: str
    expose: bool = False  # show the error's message for 5xx statuses


_TYPES = (
    ProblemType("malformed_json", 400, "Malformed JSON",
                "The body is not one valid JSON document (syntax, duplicate keys, NaN, "
                "or nesting too deep)."),
    ProblemType("invalid_idempotency_key", 400, "Invalid Idempotency-Key",
                "The Idempotency-Key header must be sent once, with 1 to 255 printable "
                "ASCII characters (bare or as a quoted Structured Field String)."),
    ProblemType("unauthenticated", 401, "Missing or invalid API key",
                "Send `Authorization: Bearer <API key>`; keys are issued by "
                "`aggregator apps create`."),
    ProblemType("not_found", 404, "Not found",
                "Nothing with this id exists for the calling application."),
    ProblemType("malformed_id", 404, "Not found",
                "The id is not one this gateway issues, or names another kind of resource."),
    ProblemType("unknown_region", 404, "Not found",
                "The id names a region this deployment does not serve."),
    ProblemType("invalid_id", 404, "Not found", "The id cannot name anything here."),
    ProblemType("method_not_allowed", 405, "Method not allowed",
                "The resource exists but not with this method; see the Allow header."),
    ProblemType("conflict", 409, "Conflict",
                "The request conflicts with the resource's current state."),
    ProblemType("idempotency_key_in_use", 409, "Idempotency-Key in use",
                "A request with this Idempotency-Key is still being processed; retry "
                "after Retry-After seconds to get its answer."),
    ProblemType("misdirected_request", 421, "Misdirected request",
                "Without `[http] public_url` the gateway builds Link URLs from the request's "
                "Host, which it accepts on loopback only; an operator must set public_url."),
    ProblemType("content_too_large", 413, "Content too large",
                "The body exceeds the gateway's limit for a request body."),
    ProblemType("unsupported_media_type", 415, "Unsupported media type",
                "Request bodies must be `application/json`."),
    ProblemType("validation_failed", 422, "Validation failed",
                "The body or the query parameters do not match the operation's schema; "
                "`errors` lists each one."),
    ProblemType("idempotency_key_reused", 422, "Idempotency-Key reused",
                "This Idempotency-Key was used for a different request (method, path or "
                "body) in the last 24 hours; use a new key for a new request."),
    ProblemType("invalid_cursor", 422, "Invalid cursor",
                "The cursor was not issued for this resource, or has been altered."),
    ProblemType("grant_revoked", 409, "Bank grant revoked",
                "The bank no longer honours the connection's grant; the user must "
                "re-consent through an update-mode link session."),
    ProblemType("consent_rejected", 409, "Consent rejected",
                "The user or the bank declined consent."),
    ProblemType("sync_budget_exhausted", 429, "Sync budget exhausted",
                "The connection has used the bank's budget of unattended calls for the "
                "last 24 hours; `next_sync_allowed_at` and Retry-After say when to retry."),
    ProblemType("rate_limited", 429, "Too many requests",
                "The calling application used up its request budget for this kind of "
                "request; Retry-After says when to retry, and the RateLimit and "
                "RateLimit-Policy fields describe the budget."),
    ProblemType("internal_error", 500, "Internal error",
                "Something failed inside the gateway; quote the request id to an operator."),
    ProblemType("not_implemented", 501, "Not implemented",
                "This deployment does not offer the operation yet.", expose=True),
    ProblemType("bank_protocol_error", 502, "Bank answered incorrectly",
                "The bank's answer broke the protocol; retrying rarely helps.", expose=True),
    ProblemType("bank_unsupported", 502, "Bank lacks a required feature",
                "The bank does not support what the operation needs.", expose=True),
    ProblemType("egress_refused", 502, "Outbound call refused",
                "The gateway's outbound policy (its SSRF guard) refused the bank's address "
                "or its answer; an operator must correct the configuration."),
    ProblemType("bank_unavailable", 503, "Bank unavailable",
                "The bank could not be reached or asked us to back off; retry later "
                "(see Retry-After).", expose=True),
    ProblemType("key_provider_unavailable", 503, "Key provider unavailable",
                "The region's key provider could not be reached; retry later.", expose=True),
    ProblemType("not_ready", 503, "Not ready",
                "A region's database or key provider is not usable; `regions` says which.",
                expose=True),
)
PROBLEM_TYPES: Mapping[str, ProblemType] = {t.code: t for t in _TYPES}

#: Codes of other packages' errors mapped to one of the documented types above.
ALIASES: Mapping[str, str] = {
    "invalid_api_key": "unauthenticated",
    "state_mismatch": "conflict",
    "authorization_expired": "conflict",
    "issuer_mismatch": "bank_protocol_error",
    "response_too_large": "egress_refused",
}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field (``pointer``, a JSON Pointer into the body) or query ``parameter``."""

    detail: str
    pointer: str | None = None
    parameter: str | None = None

    def as_json(self) -> dict[str, str]:
        out = {"detail": self.detail}
        if self.pointer is not None:
            out["pointer"] = self.pointer
        if self.parameter is not None:
            out["parameter"] = self.parameter
        return out


class HttpProblem(GatewayError):
    """An error the HTTP layer raises itself; its ``code`` names a :data:`PROBLEM_TYPES` entry.

    ``extra`` holds extension members (§3.2), ``headers`` response headers.
    """

    code = "internal_error"

    def __init__(
        self, detail: str | None = None, *, extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or PROBLEM_TYPES[self.code].title)
        self.detail = detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


class NotFound(HttpProblem):
    """Raised for a well-formed id that names nothing the caller may see."""

    code = "not_found"


class Conflict(HttpProblem):
    """Raised when the resource's state forbids the operation (revoked, already exists)."""

    code = "conflict"


class MalformedJson(HttpProblem):
    """Raised when the body does not parse as exactly one JSON document."""

    code = "malformed_json"


class UnsupportedMediaType(HttpProblem):
    """Raised when a body arrives with a content type other than JSON."""

    code = "unsupported_media_type"


class ContentTooLarge(HttpProblem):
    """Raised by the body limit while a body without Content-Length is being read."""

    code = "content_too_large"


class InvalidCursor(HttpProblem):
    """Raised for a cursor that does not decode, or belongs to another resource."""

    code = "invalid_cursor"


class Unauthenticated(HttpProblem):
    """Raised when the Authorization header is missing or not a Bearer credential."""

    code = "unauthenticated"


class NotImplementedYet(HttpProblem):
    """Raised when an operation's back end is not wired into this deployment."""

    code = "not_implemented"


class SyncBudgetExhausted(HttpProblem):
    """Raised when a sync would exceed the connection's rate budget; carries Retry-After."""

    code = "sync_budget_exhausted"


class ValidationFailed(HttpProblem):
    """Raised by :mod:`aggregator.http.schema` with every field that failed."""

    code = "validation_failed"

    def __init__(self, errors: list[FieldError]) -> None:
        noun = "field" if len(errors) == 1 else "fields"
        super().__init__(f"{len(errors)} {noun} failed validation",
                         extra={"errors": [e.as_json() for e in errors]})
        self.errors = errors


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def problem_type_of(exc: BaseException) -> ProblemType:
    """The documented type an error maps to, by the first mapped ``code`` in its MRO."""
    for cls in type(exc).__mro__:
        code = getattr(cls, "code", None)
        if not isinstance(code, str):
            continue
        code = ALIASES.get(code, code)
        if code in PROBLEM_TYPES:
            return PROBLEM_TYPES[code]
    return PROBLEM_TYPES["internal_error"]


def problem(
    kind: ProblemType, *, detail: str | None = None, instance: str | None = None,
    extra: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
    type_uri: str | None = None,
) -> ProblemResponse:
    status = kind.status
    body: dict[str, Any] = {
        "type": type_uri or f"/problems/{kind.code}",
        "title": kind.title,
        "status": status,
        "detail": detail or kind.title,
    }
    if instance is not None:
        # §3.1.5: a URI reference. Callers pass the decoded request path, which may hold
        # spaces, controls or non-ASCII text; percent-encoding it again (RFC 3986 §2.1)
        # keeps the member a valid reference to the very path that was requested.
        body["instance"] = quote(instance, safe="/", errors="replace")
    body["request_id"] = current_request_id()
    body.update(extra or {})
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def problem_for(exc: BaseException, instance: str | None = None) -> ProblemResponse:
    """The response for any error: mapped by code, internals hidden for 5xx."""
    kind = problem_type_of(exc)
    detail = str(exc) if kind.status < 500 or kind.expose else None
    extra = exc.extra if isinstance(exc, HttpProblem) else {}
    headers = dict(exc.headers) if isinstance(exc, HttpProblem) else {}
    if kind.code == "unauthenticated":
        detail = "missing or invalid API key"  # one answer: unknown, revoked or disabled
        headers.setdefault("WWW-Authenticate", 'Bearer realm="aggregator"')
    retry_after = getattr(exc, "retry_after", None)
    if kind.status in (429, 503) and isinstance(retry_after, int | float) and retry_after > 0:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return problem(kind, detail=detail, instance=instance, extra=extra, headers=headers)


def status_problem(status: int, instance: str | None,
                   headers: Mapping[str, str] | None = None) -> ProblemResponse:
    """A problem for a bare HTTP status raised by the router (404, 405, ...)."""
    code = {404: "not_found", 405: "method_not_allowed", 413: "content_too_large"}.get(status)
    if code is not None:
        return problem(PROBLEM_TYPES[code], instance=instance, headers=headers)
    # No type of ours: "about:blank" means the status phrase says it all (§4.2.1).
    phrase = http.HTTPStatus(status).phrase
    kind = ProblemType(f"http_{status}", status, phrase, phrase)
    return problem(kind, instance=instance, headers=headers, type_uri="about:blank")
