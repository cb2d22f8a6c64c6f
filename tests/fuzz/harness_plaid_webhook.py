#!/usr/bin/env python3
"""Fuzz the Plaid webhook verifier: arbitrary header and body, accepted only when genuine.

Input: the ``Plaid-Verification`` header value (decoded as ISO-8859-1, as Starlette
decodes header bytes) up to the first newline, then the raw body. Contract:
:meth:`connectors.WebhookVerifier.verify` returns a :class:`~connectors.PlaidWebhook` or
raises :class:`~connectors.WebhookRejected`, nothing else; and whatever it accepts is
also accepted by an independent JOSE implementation (joserfc, ES256 only) under the
one key Plaid "publishes" here, with ``iat`` inside the window and
``request_body_sha256`` equal to SHA-256 of the body. So a crash is a bug, and so is an
acceptance joserfc would refuse (an algorithm confusion, a malleable encoding).

The signing key is fixed (a test-only scalar) so the committed seeds, signed by
``make_seeds.py``, verify and coverage starts past the signature. The
``regression-*`` seeds are issue 15's hostile inputs (a JWS header nested 1,000 deep, a
body nested deep, lone surrogates, NaN/Infinity, duplicate keys, a NUL in ``item_id``):
each once raised (a 500) or was accepted; the contract refuses both. Run by hand::

    python tests/fuzz/harness_plaid_webhook.py tests/fuzz/corpus/plaid_webhook \\
        -max_total_time=600
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import atheris
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey

with atheris.instrument_imports(include=["connectors"]):
    from connectors import PlaidWebhook, WebhookKeys, WebhookRejected, WebhookVerifier

T = TypeVar("T")
#: Test-only signing key: it signs nothing but the fuzz seeds.
PRIVATE_KEY = ec.derive_private_key(
    0x6B3F2A91C4D8E7F0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718, ec.SECP256R1()
)
KID = "fuzz-kid-1"
NOW = 1_764_000_000  # the verifier's clock; seeds are signed at NOW - 10
MAX_AGE = 300


def _b64(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()


_NUMBERS = PRIVATE_KEY.public_key().public_numbers()
JWK: Mapping[str, Any] = {
    "kid": KID, "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
    "x": _b64(_NUMBERS.x), "y": _b64(_NUMBERS.y), "created_at": NOW - 86_400,
    "expired_at": None,
}
ORACLE_KEY = ECKey.import_key({k: JWK[k] for k in ("kty", "crv", "x", "y")})


async def _fetch(kid: str) -> Mapping[str, Any] | None:
    return JWK if kid == KID else None


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never waits (the fetcher answers at once) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the verifier waited on something")


def _oracle_accepts(header: str, body: bytes) -> bool:
    try:
        token = jws.deserialize_compact(header, ORACLE_KEY, algorithms=["ES256"])
        claims = json.loads(token.payload)
    except Exception:  # any refusal by the oracle, whatever its kind, is a refusal
        return False
    iat = claims.get("iat") if isinstance(claims, dict) else None
    return (
        isinstance(iat, int) and not isinstance(iat, bool) and iat >= NOW - MAX_AGE
        and claims.get("request_body_sha256") == hashlib.sha256(body).hexdigest()
    )


def test_one_input(data: bytes) -> None:
    raw_header, _, body = data.partition(b"\n")
    header = raw_header.decode("latin-1")
    verifier = WebhookVerifier(WebhookKeys(_fetch, clock=lambda: NOW), clock=lambda: NOW,
                               max_age=MAX_AGE)
    try:
        webhook = _run(verifier.verify(body, header or None))
    except WebhookRejected:
        return
    assert isinstance(webhook, PlaidWebhook)
    assert webhook.body == body
    assert webhook.kid == KID
    assert _oracle_accepts(header, body), "accepted a webhook an independent JOSE check refuses"


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
