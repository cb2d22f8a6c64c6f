"""The hybrid flow's ID token as a detached signature (FAPI 1 Advanced §5.2.2.1, OIDC Core
§3.3.2.12): the front channel's answer is believed only once its ID token says so.

With ``response_type = "code id_token"`` the bank's authorization response carries an ID
token next to the code. It is checked before the code is used:

- the signature, against the bank's JWKS (``jwks_uri``), PS256 or ES256 only (FAPI 1
  Advanced §8.6); the keys are fetched once per client and again when a ``kid`` is new;
- ``iss`` is the bank's issuer, ``aud`` holds our client id, ``exp`` has not passed
  (OIDC Core §3.1.3.7), ``nonce`` is the request's (§3.3.2.11);
- ``c_hash`` is the left half of SHA-256 of the code (§3.3.2.11), so the code is the one
  the bank signed; ``s_hash`` the same of ``state`` (FAPI 1 Advanced §5.2.2.1-5);
- each ``expected`` claim has its value (OBIE: ``openbanking_intent_id`` = the consent).

Any failure is :class:`~connectors.errors.BankProtocolError` naming the check, never
the token or a claim's value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from connectors.errors import BankProtocolError, IssuerMismatch
from connectors.oauth.boundary import map_bank_errors, raise_for_unavailable

__all__ = ["BankKeys", "check_detached_id_token", "half_hash"]

ALGORITHMS = ("PS256", "ES256")
_LEEWAY = 60


def half_hash(value: str) -> str:
    """OIDC Core §3.3.2.11: base64url of the left half of SHA-256 (for PS256/ES256)."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


class BankKeys:
    """A bank's signing keys from its ``jwks_uri``, cached; refetched for an unknown kid."""

    def __init__(self, http: httpx.AsyncClient, jwks_uri: str, bank: str) -> None:
        self._http, self._uri, self._bank = http, jwks_uri, bank
        self._keys: KeySet | None = None

    async def keys(self, kid: str | None) -> KeySet:
        known = self._keys
        if known is not None and (kid is None or any(k.kid == kid for k in known.keys)):
            return known
        with map_bank_errors(self._bank, "jwks"):
            response = await self._http.get(self._uri, timeout=10.0, follow_redirects=False)
        raise_for_unavailable(response, self._bank, "jwks")
        try:
            self._keys = KeySet.import_key_set(response.json())
        except (ValueError, TypeError, KeyError, JoseError):
            raise BankProtocolError(f"{self._bank}: jwks_uri answered no usable key set"
                                    ) from None
        return self._keys


async def check_detached_id_token(
    response: Mapping[str, str], *, keys: BankKeys, issuer: str, client_id: str,
    nonce: str | None, now: datetime, expected: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Verify the authorization response's ID token; returns its claims."""
    token_text = response.get("id_token")
    code, state = response.get("code"), response.get("state")
    if not token_text or not code or not state:
        raise BankProtocolError("hybrid response lacks id_token, code or state")
    try:
        header = _header(token_text)
        token = jwt.decode(token_text, await keys.keys(header.get("kid")),
                           algorithms=list(ALGORITHMS))
    except (JoseError, ValueError) as exc:
        raise BankProtocolError("hybrid ID token signature does not verify") from exc
    claims: dict[str, Any] = dict(token.claims)
    if claims.get("iss") != issuer:
        raise IssuerMismatch("hybrid ID token issued by another issuer")
    audience = claims.get("aud")
    if client_id not in ([audience] if isinstance(audience, str) else audience or []):
        raise BankProtocolError("hybrid ID token is not addressed to this client")
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or now.timestamp() > expires + _LEEWAY:
        raise BankProtocolError("hybrid ID token has expired or has no exp")
    checks = {"nonce": nonce, "c_hash": half_hash(code), "s_hash": half_hash(state),
              **(expected or {})}
    for name, value in checks.items():
        found = claims.get(name)
        if value is None or not isinstance(found, str) or not hmac.compare_digest(
                found.encode(), value.encode()):
            raise BankProtocolError(f"hybrid ID token: {name} does not match")
    return claims


def _header(token: str) -> dict[str, Any]:
    head = token.split(".", 1)[0]
    value = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    if not isinstance(value, dict):
        raise ValueError("JWS header is not an object")
    return value
