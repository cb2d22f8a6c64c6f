"""The ID token checks that matter to a client which never uses the ID token as a login.

The gateway does not sign anyone in with the ID token; it asks for ``openid`` because
banks tie refresh tokens and consent screens to it. What it must still catch is a token
minted for another client or request (a replayed or injected code): OpenID Connect Core
§3.1.3.7 steps 2, 3, 9 and 11 — ``iss``, ``aud``, ``exp`` and ``nonce``. The token comes
straight from the token endpoint over TLS, so step 6 lets TLS server authentication
stand in for the signature check.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

from connectors.errors import BankProtocolError, IssuerMismatch

__all__ = ["check_id_token"]

_LEEWAY = timedelta(seconds=120)


def check_id_token(
    id_token: str, *, issuer: str, client_id: str, nonce: str | None, now: datetime
) -> None:
    """Raise unless the ID token's claims belong to this client, bank and request."""
    claims = _claims(id_token)
    if claims.get("iss") != issuer:
        raise IssuerMismatch("ID token issued by another issuer")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise BankProtocolError("ID token is not addressed to this client")
    if len(audiences) > 1 and claims.get("azp") not in (None, client_id):
        raise BankProtocolError("ID token authorized party is another client")
    expires = claims.get("exp")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise BankProtocolError("ID token has no valid exp")
    if now.timestamp() > expires + _LEEWAY.total_seconds():
        raise BankProtocolError("ID token has expired")
    if nonce is not None and claims.get("nonce") != nonce:
        # §3.1.3.7 step 11: a nonce from another authorization request is a replay.
        raise BankProtocolError("ID token nonce does not match the authorization request")


def _claims(id_token: str) -> dict[str, Any]:
    parts = id_token.split(".")
    if len(parts) != 3:
        raise BankProtocolError("ID token is not a compact JWS (encrypted ID tokens unsupported)")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except ValueError:
        raise BankProtocolError("ID token payload is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise BankProtocolError("ID token payload is not a JSON object")
    return claims
