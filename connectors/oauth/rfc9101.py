"""Signed authorization request objects: RFC 9101 (JAR), client side.

The authorization request's parameters travel as claims of a JWS the client signs with
its own key, so neither the browser nor anything between can alter them (§10.1), and
the bank learns they come from the client (§5). We sign through the
:class:`~connectors.oauth.rfc7523.Signer` seam (PS256/ES256; the key may live in Vault
or an HSM) and never encrypt.

- §4: the claims are the request's parameters plus ``iss`` (the client id) and ``aud``
  (the bank's issuer identifier); ``exp``, ``nbf``, ``iat`` and a fresh ``jti`` bound
  its life (FAPI 1 Advanced §5.2.2-13/17: ``exp`` minus ``nbf`` at most 60 minutes);
- §10.8: the JWS header ``typ`` is ``oauth-authz-req+jwt``.

Nothing here logs: the signing input holds the PKCE challenge, ``state`` and ``nonce``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from connectors.oauth.rfc7523 import ALGORITHMS, Signer, _b64, _b64_json

__all__ = ["REQUEST_OBJECT_LIFETIME", "REQUEST_OBJECT_TYPE", "build_request_object"]

REQUEST_OBJECT_TYPE: Final = "oauth-authz-req+jwt"
#: Long enough for a slow PAR round trip, far below FAPI's 60-minute ceiling.
REQUEST_OBJECT_LIFETIME: Final = timedelta(minutes=5)


async def build_request_object(
    signer: Signer,
    params: Mapping[str, Any],
    *,
    client_id: str,
    audience: str,
    now: datetime,
    lifetime: timedelta = REQUEST_OBJECT_LIFETIME,
) -> str:
    """The compact JWS of ``params`` as a request object for ``audience`` (the issuer)."""
    if signer.algorithm not in ALGORITHMS:
        raise ValueError(f"signer algorithm {signer.algorithm!r} is not PS256 or ES256")
    if not timedelta(0) < lifetime <= timedelta(minutes=60):
        raise ValueError("request object lifetime must be between 0 and 60 minutes")
    header: dict[str, str] = {"alg": signer.algorithm, "typ": REQUEST_OBJECT_TYPE}
    if signer.key_id:
        header["kid"] = signer.key_id
    issued = int(now.timestamp())
    claims = {
        **params,
        "iss": client_id,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime.total_seconds()),
        "jti": secrets.token_urlsafe(24),
    }
    signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode("ascii")
    signature = await signer.sign(signing_input)
    return f"{signing_input.decode('ascii')}.{_b64(signature)}"
