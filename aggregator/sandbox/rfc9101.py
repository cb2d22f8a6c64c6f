"""Request objects (RFC 9101, JAR), server side: verified against the client's own key.

The sandbox's OBIE mode accepts an authorization request only as a signed request
object, pushed (RFC 9126 §3) or in the ``request`` parameter (RFC 9101 §5.1). Checks,
each answered ``invalid_request_object`` (RFC 9101 §6.3 and OIDC Core §3.1.2.6):

- the JWS verifies with a key the client registered (``SandboxClient.jwks``), PS256 or
  ES256 only (FAPI 1 Advanced §8.6);
- ``iss`` is the client, ``aud`` is this issuer, ``client_id`` inside equals outside;
- ``exp`` is in the future, at most 60 minutes after ``nbf`` (FAPI 1 Advanced
  §5.2.2-13/17), and ``nbf`` is not in the future;
- ``response_type`` and ``scope`` sent outside equal those inside (OIDC Core §6.1).

Only the request object's claims are used (RFC 9101 §5): outer parameters are checked,
never merged in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError

from aggregator.sandbox.models import ClientModel

ALGORITHMS = ("PS256", "ES256")
MAX_LIFETIME = 3600
LEEWAY = 30
_REGISTERED = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti"})


class InvalidRequestObjectError(OAuth2Error):  # type: ignore[misc]
    """OIDC Core §3.1.2.6 ``invalid_request_object``."""

    error = "invalid_request_object"


def unpack(client: ClientModel, outer: Mapping[str, str], issuer: str,
           keys: Any = None) -> dict[str, str]:
    """The authorization parameters of the verified request object in ``outer``.

    ``keys`` replaces the client's registered keys (a bank that holds a separate
    request-object key for the client).
    """
    jws = outer.get("request")
    if not jws:
        raise InvalidRequestObjectError(description="A signed request object is required.")
    keys = keys if keys is not None else client.public_keys
    if keys is None:
        raise InvalidRequestObjectError(description="The client has no registered keys.")
    try:
        token = jwt.decode(jws, keys, algorithms=list(ALGORITHMS))
    except (JoseError, ValueError) as exc:
        raise InvalidRequestObjectError(
            description="The request object's signature does not verify.") from exc
    claims: dict[str, Any] = token.claims
    _check_claims(claims, client.get_client_id(), issuer)
    for name in ("client_id", "response_type", "scope"):
        if name in outer and name in claims and outer[name] != claims[name]:
            raise InvalidRequestObjectError(description=f"'{name}' differs inside and out.")
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in claims.items() if key not in _REGISTERED
    }


def _check_claims(claims: Mapping[str, Any], client_id: str, issuer: str) -> None:
    now = time.time()
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if claims.get("iss") != client_id or claims.get("client_id") != client_id:
        raise InvalidRequestObjectError(description="The request object is another client's.")
    if not isinstance(audiences, list) or issuer not in audiences:
        raise InvalidRequestObjectError(description="The request object is for another issuer.")
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise InvalidRequestObjectError(description="The request object needs exp and nbf.")
    if exp <= now - LEEWAY or nbf > now + LEEWAY or exp - nbf > MAX_LIFETIME:
        raise InvalidRequestObjectError(description="The request object is not valid now.")
