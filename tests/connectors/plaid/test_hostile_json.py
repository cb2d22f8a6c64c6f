"""Hostile JSON in a Plaid webhook's JWS header, claims and body: always a refusal.

Each input here once raised (``RecursionError``, ``UnicodeEncodeError`` on insert) or
was accepted (``NaN``, a duplicate ``alg``); each is now a :class:`WebhookRejected` with a
client-error reason. Signed with Plaid's genuine key where that matters, so nothing but
the JSON rules can be what refuses them.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from connectors import RejectReason, WebhookKeys, WebhookRejected, WebhookVerifier
from connectors.plaid.jwk import b64url_decode
from connectors.plaid.rfc7493 import loads
from tests.connectors.plaid.fake_plaid import FakePlaid, SigningKey, b64url, es256
from tests.connectors.plaid.test_webhooks import BODY, Clock, Keys

NOW = 1_800_000_000


def raw_jws(header: bytes, claims: bytes, key: SigningKey) -> str:
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    return f"{signing_input}.{b64url(es256(key.private)(signing_input.encode()))}"


def claims_for(body: bytes) -> bytes:
    return json.dumps({"iat": NOW, "request_body_sha256": hashlib.sha256(body).hexdigest()}
                      ).encode()


@pytest.fixture
def plaid() -> tuple[FakePlaid, SigningKey, WebhookVerifier]:
    fake, clock = FakePlaid(), Clock()
    clock.now = NOW
    key = fake.add_key()
    return fake, key, WebhookVerifier(WebhookKeys(Keys(fake), clock=clock), clock=clock)


def _header(key: SigningKey, extra: str = "") -> bytes:
    return ('{"alg":"ES256","kid":"' + key.kid + '","typ":"JWT"' + extra + "}").encode()


HOSTILE_HEADERS = {
    "nested-1000": lambda k: b'{"alg":"ES256","kid":"%s","x":' % k.kid.encode()
    + b"[" * 1000 + b"]" * 1000 + b"}",
    "duplicate-alg": lambda k: _header(k, ',"alg":"none"'),
    "nan": lambda k: _header(k, ',"x":NaN'),
    "infinity": lambda k: _header(k, ',"x":-Infinity'),
    "lone-surrogate": lambda k: _header(k, ',"x":"\\udc00"'),
    "not-utf8": lambda k: _header(k, ',"x":"\xff"').replace(b"\xc3\xbf", b"\xff"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HEADERS))
async def test_hostile_jws_headers_are_refused_as_malformed(
        plaid: tuple[FakePlaid, SigningKey, WebhookVerifier], name: str) -> None:
    _, key, verifier = plaid
    header = raw_jws(HOSTILE_HEADERS[name](key), claims_for(BODY), key)
    with pytest.raises(WebhookRejected) as caught:
        await verifier.verify(BODY, header)
    assert caught.value.reason is RejectReason.MALFORMED_HEADER


@pytest.mark.parametrize("claims", [
    b'{"iat":1800000000,"iat":1,"request_body_sha256":"%s"}',
    b'{"iat":1800000000,"request_body_sha256":"%s","x":NaN}',
    b'{"iat":1800000000,"request_body_sha256":"%s","x":[[[[[[1]]]]]]}',
])
async def test_hostile_claims_are_refused(
        plaid: tuple[FakePlaid, SigningKey, WebhookVerifier], claims: bytes) -> None:
    _, key, verifier = plaid
    filled = claims.replace(b"%s", hashlib.sha256(BODY).hexdigest().encode())
    with pytest.raises(WebhookRejected) as caught:
        await verifier.verify(BODY, raw_jws(_header(key), filled, key))
    assert caught.value.reason is RejectReason.MALFORMED_CLAIMS


HOSTILE_BODIES = {
    "nested-5000": b'{"webhook_type":"ITEM","webhook_code":"ERROR","x":'
    + b"[" * 5000 + b"]" * 5000 + b"}",
    "lone-surrogate-item": b'{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"\\ud800"}',
    "nan": b'{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"i","n":NaN}',
    "infinity": b'{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"i","n":Infinity}',
    "duplicate-code": b'{"webhook_type":"ITEM","webhook_code":"ERROR","webhook_code":"X"}',
    "nul-in-item": b'{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"a\\u0000b"}',
    "control-in-code": b'{"webhook_type":"ITEM","webhook_code":"ERR\\nOR"}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
async def test_hostile_bodies_behind_a_valid_signature_are_refused(
        plaid: tuple[FakePlaid, SigningKey, WebhookVerifier], name: str) -> None:
    fake, key, verifier = plaid
    body = HOSTILE_BODIES[name]
    with pytest.raises(WebhookRejected) as caught:
        await verifier.verify(body, fake.sign(body, key, iat=NOW))
    assert caught.value.reason is RejectReason.MALFORMED_BODY


@pytest.mark.parametrize("text", [
    b'{"a": "\\ud83d\\ude00"}',  # a surrogate *pair* is a valid escape
    b'{"a": "\\\\ud800"}',  # a backslash, then the text "ud800": no escape at all
    b'{"a": "[[[[{{{{"}',  # brackets inside strings do not nest
    b' {"a": [1, 2.5e3, true, null]} ',
])
def test_strict_json_still_reads_valid_json(text: bytes) -> None:
    assert loads(text, max_bytes=100, max_depth=2) == json.loads(text)


def test_strict_json_bounds_size_and_depth_before_parsing() -> None:
    with pytest.raises(ValueError, match="too large"):
        loads(b"[" * 10_000, max_bytes=1_000)
    with pytest.raises(ValueError, match="too deep"):
        loads(b"[" * 100_000 + b"]" * 100_000, max_bytes=1_000_000)
    assert b64url_decode(b64url(b"x")) == b"x"
