from __future__ import annotations

import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from aggregator.sandbox.testing import Served, ServeFactory


@pytest.mark.parametrize(
    "path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
)
async def test_discovery_document_names_the_served_base_url_as_issuer(
    served: Served, path: str
) -> None:
    response = await served.http.get(path)

    assert response.status_code == 200
    doc = response.json()
    issuer = served.base_url
    assert doc["issuer"] == issuer
    assert not issuer.endswith("/")
    assert doc["authorization_endpoint"] == f"{issuer}/authorize"
    assert doc["token_endpoint"] == f"{issuer}/token"
    assert doc["pushed_authorization_request_endpoint"] == f"{issuer}/par"
    assert doc["revocation_endpoint"] == f"{issuer}/revoke"
    assert doc["require_pushed_authorization_requests"] is False
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ]
    assert doc["token_endpoint_auth_signing_alg_values_supported"] == ["PS256", "ES256"]
    assert {"openid", "offline_access", "accounts", "transactions"} <= set(doc["scopes_supported"])
    assert doc["response_types_supported"] == ["code"]
    assert doc["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert doc["revocation_endpoint_auth_methods_supported"]
    # authlib's own RFC 8414 validator accepts it (raises on any violation).
    AuthorizationServerMetadata(doc).validate()


async def test_discovery_reports_required_par_when_configured(serve: ServeFactory) -> None:
    async with serve(require_par=True) as s:
        doc = (await s.http.get("/.well-known/oauth-authorization-server")).json()

    assert doc["require_pushed_authorization_requests"] is True


async def test_jwks_publishes_only_the_public_signing_key(served: Served) -> None:
    keys = (await served.http.get("/jwks")).json()["keys"]

    assert len(keys) == 1
    assert keys[0]["kty"] == "EC"
    assert "d" not in keys[0]
