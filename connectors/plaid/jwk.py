"""ES256 public keys from Plaid's JWKs, and JWS signatures in the form cryptography wants.

Only what Plaid uses is accepted: ``kty`` EC on ``crv`` P-256 with ``alg`` ES256
(RFC 7518 §3.4, §6.2.1). A JWS ES256 signature is the raw ``R || S`` pair, 32 bytes
each (RFC 7518 §3.4); cryptography verifies DER, so it is re-encoded here. Nothing
else (RSA, HMAC, other curves) can ever be produced from a key document, which is what
defeats the "HS256 signed with the public key as the secret" confusion attack.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["b64url_decode", "es256_der_signature", "public_key_from_jwk"]

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2); raises ``ValueError`` on anything else.

    Only the canonical encoding is accepted (RFC 4648 §3.5: the unused bits of the last
    character are zero). Otherwise one signature has several spellings, and a JWS that
    every strict implementation refuses would verify here.
    """
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise ValueError("not canonical base64url")
    return raw


def public_key_from_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    """The P-256 public key of an ES256 JWK; ``ValueError`` for any other kind of key."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("not an EC P-256 key")
    if jwk.get("alg") not in (None, "ES256") or jwk.get("use") not in (None, "sig"):
        raise ValueError("not a signing key for ES256")
    x, y = jwk.get("x"), jwk.get("y")
    if not isinstance(x, str) or not isinstance(y, str):
        raise ValueError("missing coordinates")
    xb, yb = b64url_decode(x), b64url_decode(y)
    if len(xb) != 32 or len(yb) != 32:
        raise ValueError("coordinates are not 32 bytes")
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(xb, "big"), int.from_bytes(yb, "big"), ec.SECP256R1()
    )
    return numbers.public_key()  # checks the point is on the curve


def es256_der_signature(raw: bytes) -> bytes:
    """``R || S`` (64 bytes) as the DER ``ECDSA-Sig-Value`` cryptography verifies."""
    if len(raw) != 64:
        raise ValueError("an ES256 signature is 64 bytes")
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
