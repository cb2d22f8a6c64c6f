"""Every error of the three packages maps to a documented problem by its ``code``."""

from __future__ import annotations

import json

import httpx
import pytest

from aggregator.errors import (
    ConfigError,
    GatewayError,
    InvalidApiKey,
    MalformedId,
    ResidencyViolation,
    SchemaOutOfDate,
    UnknownRegion,
)
from aggregator.http.app import create_app
from aggregator.http.problems import PROBLEM_TYPES, problem_for
from aggregator.http.views import ProblemTypeOut
from aggregator.settings import Settings
from connectors import (
    AuthorizationExpired,
    BankProtocolError,
    BankUnavailable,
    BankUnsupported,
    ConsentRejected,
    EgressRefused,
    GrantRevoked,
    IssuerMismatch,
    ProfileError,
    ResponseTooLarge,
    StateMismatch,
)
from tests.aggregator.http._helpers import parsed
from tests.aggregator.http.conftest import GATEWAY
from vault import DataKeyDestroyed, ProviderUnavailable, TamperedBlob


@pytest.mark.parametrize(("error", "status", "code"), [
    (MalformedId("x"), 404, "malformed_id"),
    (UnknownRegion("x"), 404, "unknown_region"),
    (InvalidApiKey("revoked"), 401, "unauthenticated"),
    (GrantRevoked("x"), 409, "grant_revoked"),
    (ConsentRejected("x"), 409, "consent_rejected"),
    (StateMismatch("x"), 409, "conflict"),
    (AuthorizationExpired("x"), 409, "conflict"),
    (IssuerMismatch("x"), 502, "bank_protocol_error"),
    (BankProtocolError("x"), 502, "bank_protocol_error"),
    (BankUnsupported("x"), 502, "bank_unsupported"),
    (BankUnavailable("x"), 503, "bank_unavailable"),
    (EgressRefused("x"), 502, "egress_refused"),
    (ResponseTooLarge("x"), 502, "egress_refused"),
    (ProviderUnavailable("x"), 503, "key_provider_unavailable"),
    (ResidencyViolation("x"), 500, "internal_error"),
    (SchemaOutOfDate("x"), 500, "internal_error"),
    (ConfigError("x"), 500, "internal_error"),
    (ProfileError("f", "k", "p"), 500, "internal_error"),
    (TamperedBlob("x"), 500, "internal_error"),
    (DataKeyDestroyed("x"), 500, "internal_error"),
    (GatewayError("x"), 500, "internal_error"),
    (KeyError("x"), 500, "internal_error"),
])
def test_errors_map_by_code(error: Exception, status: int, code: str) -> None:
    response = problem_for(error, "/v1/x")
    body = json.loads(bytes(response.body))
    assert (response.status_code, body["type"]) == (status, f"/problems/{code}")
    assert response.media_type == "application/problem+json"
    if status >= 500 and not PROBLEM_TYPES[code].expose:
        assert body["detail"] == PROBLEM_TYPES[code].title  # internals stay inside


def test_an_invalid_key_never_says_why() -> None:
    for reason in ("unknown API key", "API key revoked or application disabled"):
        body = json.loads(bytes(problem_for(InvalidApiKey(reason)).body))
        assert body["detail"] == "missing or invalid API key"


async def test_every_problem_type_resolves_to_its_description(bare_settings: Settings) -> None:
    app = create_app(bare_settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=GATEWAY) as client:
        for code, kind in PROBLEM_TYPES.items():
            described = parsed(ProblemTypeOut, await client.get(f"/problems/{code}"))
            assert (described.type, described.status) == (f"/problems/{code}", kind.status)
        assert (await client.get("/problems/nope")).status_code == 404
