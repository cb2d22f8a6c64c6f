"""Discovery (RFC 8414 / OpenID): where it looks, and what it refuses to trust."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connectors import BankProtocolError, BankUnavailable, IssuerMismatch, fetch_metadata
from connectors.oauth.rfc8414 import discovery_urls, parse_metadata
from tests.connectors.oauth.conftest import ISSUER, metadata_document

TIMEOUT = httpx.Timeout(5.0)


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        (
            "https://bank.test",
            (
                "https://bank.test/.well-known/oauth-authorization-server",
                "https://bank.test/.well-known/openid-configuration",
            ),
        ),
        (
            "https://bank.test/tenant/a",
            (
                "https://bank.test/.well-known/oauth-authorization-server/tenant/a",
                "https://bank.test/tenant/a/.well-known/openid-configuration",
            ),
        ),
    ],
)
def test_discovery_urls(issuer: str, expected: tuple[str, str]) -> None:
    assert discovery_urls(issuer) == expected


async def _fetch(answers: dict[str, httpx.Response], issuer: str = ISSUER) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return answers.get(request.url.path, httpx.Response(404))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await fetch_metadata(http, issuer, http_timeout=TIMEOUT)


async def test_falls_back_to_openid_configuration() -> None:
    metadata = await _fetch(
        {"/.well-known/openid-configuration": httpx.Response(200, json=metadata_document())}
    )

    assert metadata.source == f"{ISSUER}/.well-known/openid-configuration"
    assert metadata.token_endpoint == f"{ISSUER}/token"


async def test_html_at_the_first_url_falls_back_too() -> None:
    metadata = await _fetch(
        {
            "/.well-known/oauth-authorization-server": httpx.Response(200, text="<html>"),
            "/.well-known/openid-configuration": httpx.Response(200, json=metadata_document()),
        }
    )

    assert metadata.issuer == ISSUER


async def test_no_document_anywhere_is_a_protocol_error() -> None:
    with pytest.raises(BankProtocolError, match="no metadata document"):
        await _fetch({})


async def test_server_error_is_unavailable_not_a_fallback() -> None:
    with pytest.raises(BankUnavailable):
        await _fetch({"/.well-known/oauth-authorization-server": httpx.Response(502)})


@pytest.mark.parametrize("issuer", [ISSUER + "/", "https://evil.test", "HTTPS://bank.test"])
def test_issuer_must_match_exactly(issuer: str) -> None:
    with pytest.raises(IssuerMismatch):
        parse_metadata(metadata_document(issuer=issuer), expected_issuer=ISSUER, source="x")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"token_endpoint": None}, "token_endpoint is missing"),
        ({"authorization_endpoint": 42}, "not a string"),
        ({"token_endpoint": "http://bank.test/token"}, "loopback"),
        ({"revocation_endpoint": "/revoke"}, "not an absolute"),
        ({"code_challenge_methods_supported": "S256"}, "not an array of strings"),
        ({"require_pushed_authorization_requests": "true"}, "not a boolean"),
        ({"response_types_supported": ["token"]}, "response type 'code'"),
    ],
)
def test_malformed_documents_are_refused(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(BankProtocolError, match=problem):
        parse_metadata(metadata_document(**changes), expected_issuer=ISSUER, source="x")


def test_omitted_fields_take_the_rfc_defaults() -> None:
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/a",
        "token_endpoint": f"{ISSUER}/t",
    }

    metadata = parse_metadata(document, expected_issuer=ISSUER, source="x")

    assert metadata.token_endpoint_auth_methods_supported == ("client_secret_basic",)
    assert metadata.revocation_endpoint_auth_methods_supported == ("client_secret_basic",)
    assert metadata.code_challenge_methods_supported == ()
    assert metadata.require_pushed_authorization_requests is False
    assert metadata.authorization_response_iss_parameter_supported is False
    assert metadata.scopes_supported is None


def test_loopback_http_is_accepted_for_a_loopback_issuer() -> None:
    issuer = "http://127.0.0.1:8600"
    document = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
    }

    assert parse_metadata(document, expected_issuer=issuer, source="x").issuer == issuer
