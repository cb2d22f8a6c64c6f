"""``private_key_jwt`` client authentication (RFC 7523 §2.2 and §3, OIDC Core §9).

authlib's :class:`JWTBearerClientAssertion` does the parsing and the standard claim
checks; this subclass pins what a strict (FAPI-style) bank adds: only PS256 and ES256
(no ``none``, no HMAC, so no algorithm confusion), an audience that names this server,
a single-use ``jti`` and a short assertion lifetime.
"""

from __future__ import annotations

import time
from typing import Any

from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from aggregator.sandbox.discovery import ASSERTION_ALGORITHMS, assertion_audiences
from aggregator.sandbox.middleware import current_issuer
from aggregator.sandbox.models import ClientModel
from aggregator.sandbox.store import TokenStore


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """Registered with ``server.register_client_auth_method("private_key_jwt", ...)``."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, store: TokenStore, max_lifetime: int, leeway: int = 30) -> None:
        super().__init__(validate_jti=True, leeway=leeway)
        self.store = store
        self.max_lifetime = max_lifetime

    def get_audiences(self) -> list[str]:
        return assertion_audiences(current_issuer())

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(ASSERTION_ALGORITHMS))
        except JoseError as exc:
            raise InvalidClientError(description="Invalid client assertion.") from exc
        claims: dict[str, Any] = token.claims
        self.verify_claims(claims)
        return claims

    def verify_claims(self, claims: dict[str, Any]) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp - time.time() > self.max_lifetime:
            # A long-lived assertion is a bearer credential in all but name.
            raise InvalidClientError(description="Client assertion lifetime is too long.")
        super().verify_claims(claims)

    def validate_jti(self, claims: dict[str, Any], jti: object) -> bool:
        expires_at = float(claims["exp"]) + self.leeway
        return self.store.claim_jti(str(claims["sub"]), str(jti), expires_at)

    def resolve_client_public_key(self, client: ClientModel) -> ECKey | RSAKey | KeySet:
        if client.public_keys is None:
            raise InvalidClientError(description="The client has no registered keys.")
        return client.public_keys
