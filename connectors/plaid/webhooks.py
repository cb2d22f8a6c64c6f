"""Verifying a Plaid webhook on its raw body, before anything else looks at it.

Plaid signs each webhook with a compact JWS in the ``Plaid-Verification`` header
(Plaid API docs, "Webhook verification"). The checks, in order, each with its
:class:`~connectors.plaid.reasons.RejectReason`:

1. the raw body is at most ``max_body_bytes`` (nothing is parsed before this);
2. the header is a compact JWS (RFC 7515 §7.1) whose protected header is a JSON object;
   it and the claims are read with :func:`~connectors.plaid.rfc7493.loads` (bounded
   size and depth checked before parsing; no duplicate names, lone surrogates, NaN);
3. ``alg`` is exactly ``"ES256"`` — not ``none`` (RFC 7518 §3.6 "unsecured JWS"), not
   ``HS256`` (the key-confusion attack that HMACs with the public key as the secret),
   not a case variant; a ``crit`` header is refused (RFC 7515 §4.1.11);
4. ``kid`` resolves through :class:`~connectors.plaid.keys.WebhookKeys` (cached; unknown
   kids fetched at a bounded rate) to a key whose ``expired_at`` is unset or future;
5. the ES256 signature over ``header.payload`` verifies with that key;
6. ``iat`` is at most ``max_age`` seconds old and at most ``max_skew`` in the future;
7. SHA-256 of the raw body equals ``request_body_sha256`` (``hmac.compare_digest``);
8. the verified body is a JSON object (read under the same strict rules, at most
   :data:`BODY_DEPTH` deep) naming printable ``webhook_type`` and ``webhook_code``.

The signature is checked before the claims are believed, and the body is parsed only
after its digest matched. Keys of another Plaid environment are simply unknown here:
each region's :class:`WebhookKeys` asks only its own environment.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.plaid.jwk import b64url_decode, es256_der_signature
from connectors.plaid.keys import WebhookKeys
from connectors.plaid.reasons import RejectReason, WebhookRejected
from connectors.plaid.rfc7493 import loads

__all__ = ["PlaidWebhook", "WebhookVerifier"]

HEADER = "Plaid-Verification"
_MAX_JWS = 4096  # Plaid's JWS is ~400 bytes; a larger header is not Plaid's
_MAX_KID = 128
_HEADER_DEPTH = 2  # a JOSE header is a flat object; "jwk" (refused anyway) nests once
#: How deep a webhook body may nest; Plaid's go three levels deep at most.
BODY_DEPTH = 16
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ECDSA = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class PlaidWebhook:
    """A verified webhook: the raw body, its digest, and the fields the gateway routes on."""

    body: bytes = field(repr=False)
    body_sha256: bytes
    kid: str
    issued_at: datetime
    webhook_type: str
    webhook_code: str
    item_id: str | None
    payload: Mapping[str, Any] = field(repr=False)

    @property
    def error_code(self) -> str | None:
        """``error.error_code`` of an ``ITEM``/``ERROR`` webhook (``ITEM_LOGIN_REQUIRED``)."""
        error = self.payload.get("error")
        code = error.get("error_code") if isinstance(error, Mapping) else None
        return code if isinstance(code, str) else None


class WebhookVerifier:
    """Verifies webhooks for one Plaid environment; pure apart from the key lookups.

    >>> verifier = WebhookVerifier(WebhookKeys(fetch_jwk))          # doctest: +SKIP
    >>> hook = await verifier.verify(raw_body, headers.get("plaid-verification"))  # doctest: +SKIP
    """

    def __init__(
        self, keys: WebhookKeys, *, clock: Callable[[], float] = time.time,
        max_age: float = 300.0, max_skew: float = 30.0, max_body_bytes: int = 16 * 1024,
    ) -> None:
        self.keys = keys
        self._clock = clock
        self._max_age = max_age
        self._max_skew = max_skew
        self.max_body_bytes = max_body_bytes

    async def verify(self, body: bytes, header: str | None) -> PlaidWebhook:
        """The verified webhook, or :class:`WebhookRejected` with the first failed check."""
        if len(body) > self.max_body_bytes:
            raise WebhookRejected(RejectReason.BODY_TOO_LARGE)
        protected, signing_input, signature, payload = _split(header)
        kid = _check_header(protected)
        key = await self.keys.resolve(kid)
        now = self._clock()
        if key.expired_at is not None and key.expired_at <= now:
            raise WebhookRejected(RejectReason.KEY_EXPIRED)
        try:
            key.public_key.verify(es256_der_signature(signature), signing_input, _ECDSA)
        except (InvalidSignature, ValueError):
            raise WebhookRejected(RejectReason.BAD_SIGNATURE) from None
        iat, claimed = _claims(payload)
        if iat < now - self._max_age:
            raise WebhookRejected(RejectReason.STALE)
        if iat > now + self._max_skew:
            raise WebhookRejected(RejectReason.FROM_FUTURE)
        digest = hashlib.sha256(body).digest()
        if not hmac.compare_digest(digest.hex().encode(), claimed.encode()):
            raise WebhookRejected(RejectReason.BODY_MISMATCH)
        return _webhook(body, digest, kid, iat, self.max_body_bytes)


def _split(header: str | None) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    if not header:
        raise WebhookRejected(RejectReason.MISSING_HEADER)
    if len(header) > _MAX_JWS or header.count(".") != 2:
        raise WebhookRejected(RejectReason.MALFORMED_HEADER)
    head_b64, payload_b64, sig_b64 = header.split(".")
    try:
        protected = loads(b64url_decode(head_b64), max_bytes=_MAX_JWS, max_depth=_HEADER_DEPTH)
        signature = b64url_decode(sig_b64)
        payload = b64url_decode(payload_b64)  # read as claims only once the signature holds
    except ValueError:  # bad base64url, bad UTF-8, bad or hostile JSON
        raise WebhookRejected(RejectReason.MALFORMED_HEADER) from None
    if not isinstance(protected, dict):
        raise WebhookRejected(RejectReason.MALFORMED_HEADER)
    return protected, f"{head_b64}.{payload_b64}".encode("ascii"), signature, payload


def _check_header(protected: Mapping[str, Any]) -> str:
    if protected.get("alg") != "ES256" or "crit" in protected:
        raise WebhookRejected(RejectReason.BAD_ALGORITHM)
    kid = protected.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID or not kid.isprintable():
        raise WebhookRejected(RejectReason.MALFORMED_HEADER)
    return kid


def _claims(payload: bytes) -> tuple[int, str]:
    try:
        claims = loads(payload, max_bytes=_MAX_JWS, max_depth=_HEADER_DEPTH)
    except ValueError:
        raise WebhookRejected(RejectReason.MALFORMED_CLAIMS) from None
    iat = claims.get("iat") if isinstance(claims, dict) else None
    claimed = claims.get("request_body_sha256") if isinstance(claims, dict) else None
    if isinstance(iat, bool) or not isinstance(iat, int):
        raise WebhookRejected(RejectReason.MALFORMED_CLAIMS)
    if not isinstance(claimed, str) or not _SHA256_HEX.fullmatch(claimed):
        raise WebhookRejected(RejectReason.MALFORMED_CLAIMS)
    return iat, claimed


def _webhook(body: bytes, digest: bytes, kid: str, iat: int, max_bytes: int) -> PlaidWebhook:
    try:
        payload = loads(body, max_bytes=max_bytes, max_depth=BODY_DEPTH)
    except ValueError:
        raise WebhookRejected(RejectReason.MALFORMED_BODY) from None
    if not isinstance(payload, dict):
        raise WebhookRejected(RejectReason.MALFORMED_BODY)
    kind, code, item = (payload.get(k) for k in ("webhook_type", "webhook_code", "item_id"))
    if not (isinstance(kind, str) and isinstance(code, str)
            and _label(kind, 64) and _label(code, 64)):
        raise WebhookRejected(RejectReason.MALFORMED_BODY)
    if item is not None and not _label(item, 255):
        raise WebhookRejected(RejectReason.MALFORMED_BODY)
    return PlaidWebhook(body, digest, kid, datetime.fromtimestamp(iat, UTC), kind, code, item,
                        payload)


def _label(value: object, limit: int) -> bool:
    # Printable: a NUL or control character cannot be stored in a PostgreSQL text column.
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()
