"""Endpoint paths and the authorization server metadata (RFC 8414, OpenID Discovery 1.0).

The same document answers at both well-known paths: a client that only speaks one of the
two discovery flavours finds everything it needs either way.
"""

from __future__ import annotations

from typing import Any

from aggregator.sandbox.config import CLIENT_AUTH_METHODS, SCOPES, SandboxConfig

AUTHORIZE_PATH = "/authorize"
TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a password
PAR_PATH = "/par"
REVOKE_PATH = "/revoke"
JWKS_PATH = "/jwks"
LOGIN_PATH = "/login"
CONSENT_PATH = "/consent"
#: RFC 7591 §3 registration endpoint; RFC 7592 §2 configuration at ``/register/{id}``.
REGISTER_PATH = "/register"

#: Signing algorithms accepted for ``private_key_jwt`` (FAPI 1.0 Advanced §8.6).
ASSERTION_ALGORITHMS: tuple[str, ...] = ("PS256", "ES256")
ID_TOKEN_ALGORITHM = "ES256"  # noqa: S105 - an algorithm name


def assertion_audiences(issuer: str) -> list[str]:
    """``aud`` values accepted in a client assertion (RFC 7523 §3, RFC 9126 §2)."""
    return [issuer, *(issuer + path for path in (TOKEN_PATH, PAR_PATH, REVOKE_PATH))]


def server_metadata(issuer: str, config: SandboxConfig) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZE_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "pushed_authorization_request_endpoint": issuer + PAR_PATH,
        "require_pushed_authorization_requests": config.require_par,
        "revocation_endpoint": issuer + REVOKE_PATH,
        "registration_endpoint": issuer + REGISTER_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "authorization_response_iss_parameter_supported": True,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ID_TOKEN_ALGORITHM],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce"],
    }
