"""The webhook verifier and key cache, pure: an injected fetch and clock, no network."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pytest

from connectors import (
    BankUnavailable,
    RejectReason,
    WebhookKeys,
    WebhookRejected,
    WebhookVerifier,
)
from tests.connectors.plaid.fake_plaid import FakePlaid, SigningKey, new_key

BODY = json.dumps({"webhook_type": "ITEM", "webhook_code": "ERROR", "item_id": "item-1",
                   "error": {"error_code": "ITEM_LOGIN_REQUIRED"}}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Keys:
    """Plaid's key endpoint as a function, counting calls."""

    def __init__(self, fake: FakePlaid) -> None:
        self.fake = fake
        self.calls = 0
        self.down = False

    async def __call__(self, kid: str) -> Mapping[str, Any] | None:
        self.calls += 1
        if self.down:
            raise BankUnavailable("plaid down")
        key = self.fake.keys.get(kid)
        return key.jwk() if key else None


@pytest.fixture
def setup() -> tuple[FakePlaid, SigningKey, Keys, Clock, WebhookVerifier]:
    fake, clock = FakePlaid(), Clock()
    key = fake.add_key()
    fetch = Keys(fake)
    verifier = WebhookVerifier(WebhookKeys(fetch, clock=clock), clock=clock)
    return fake, key, fetch, clock, verifier


Setup = tuple[FakePlaid, SigningKey, Keys, Clock, WebhookVerifier]


async def test_a_plaid_signed_webhook_verifies_and_names_its_fields(setup: Setup) -> None:
    fake, key, fetch, clock, verifier = setup
    hook = await verifier.verify(BODY, fake.sign(BODY, key, iat=int(clock.now)))
    assert (hook.webhook_type, hook.webhook_code, hook.item_id) == ("ITEM", "ERROR", "item-1")
    assert hook.error_code == "ITEM_LOGIN_REQUIRED"
    assert hook.body_sha256 == hashlib.sha256(BODY).digest()
    await verifier.verify(BODY, fake.sign(BODY, key, iat=int(clock.now)))
    assert fetch.calls == 1  # cached by kid


async def test_iat_limits_are_exact(setup: Setup) -> None:
    fake, key, _, clock, verifier = setup
    await verifier.verify(BODY, fake.sign(BODY, key, iat=int(clock.now) - 300))
    for iat, reason in ((int(clock.now) - 301, RejectReason.STALE),
                        (int(clock.now) + 31, RejectReason.FROM_FUTURE)):
        with pytest.raises(WebhookRejected) as caught:
            await verifier.verify(BODY, fake.sign(BODY, key, iat=iat))
        assert caught.value.reason is reason


async def test_unknown_kids_are_fetched_at_a_bounded_rate(setup: Setup) -> None:
    fake, _, fetch, clock, verifier = setup
    reasons = []
    for i in range(50):
        forged = new_key(f"forged-{i}")  # never registered with Plaid
        with pytest.raises(WebhookRejected) as caught:
            await verifier.verify(BODY, fake.sign(BODY, forged, iat=int(clock.now)))
        reasons.append(caught.value.reason)
    assert fetch.calls == 3
    assert reasons.count(RejectReason.KID_RATE_LIMITED) == 47
    clock.now += 10  # one more token
    with pytest.raises(WebhookRejected):
        await verifier.verify(BODY, fake.sign(BODY, new_key("x"), iat=int(clock.now)))
    assert fetch.calls == 4


async def test_a_known_unknown_kid_is_not_refetched(setup: Setup) -> None:
    fake, _, fetch, clock, verifier = setup
    ghost = new_key("ghost")
    for _ in range(5):
        with pytest.raises(WebhookRejected, match="unknown_kid"):
            await verifier.verify(BODY, fake.sign(BODY, ghost, iat=int(clock.now)))
    assert fetch.calls == 1


async def test_key_expiry_noticed_after_the_cache_ttl(setup: Setup) -> None:
    fake, key, _, clock, verifier = setup
    await verifier.verify(BODY, fake.sign(BODY, key, iat=int(clock.now)))
    key.expired_at = int(clock.now) + 10
    clock.now += 3600  # the cached copy is refreshed and now carries expired_at
    with pytest.raises(WebhookRejected, match="key_expired"):
        await verifier.verify(BODY, fake.sign(BODY, key, iat=int(clock.now)))


async def test_plaid_outage_keeps_the_cached_key_and_refuses_new_ones(setup: Setup) -> None:
    fake, key, fetch, clock, verifier = setup
    await verifier.verify(BODY, fake.sign(BODY, key, iat=int(clock.now)))
    fetch.down = True
    clock.now += 3600
    await verifier.verify(BODY, fake.sign(BODY, key, iat=int(clock.now)))
    with pytest.raises(WebhookRejected, match="key_unavailable"):
        await verifier.verify(BODY, fake.sign(BODY, fake.add_key(), iat=int(clock.now)))


@pytest.mark.parametrize("body", [b"[1]", b'{"webhook_type": "ITEM"}', b"\xff\xfe{}"])
async def test_verified_but_malformed_bodies_are_refused(setup: Setup, body: bytes) -> None:
    fake, key, _, clock, verifier = setup
    with pytest.raises(WebhookRejected, match="malformed_body"):
        await verifier.verify(body, fake.sign(body, key, iat=int(clock.now)))


async def test_a_bad_jwk_from_plaid_is_refused(setup: Setup) -> None:
    fake, key, _, clock, _verifier = setup

    async def rsa_ish(kid: str) -> Mapping[str, Any]:
        return {**key.jwk(), "kty": "RSA"}

    verifier = WebhookVerifier(WebhookKeys(rsa_ish, clock=clock), clock=clock)
    with pytest.raises(WebhookRejected, match="bad_key"):
        await verifier.verify(BODY, fake.sign(BODY, key, iat=int(clock.now)))


async def test_a_signature_spelled_non_canonically_is_refused(setup: Setup) -> None:
    # Found by tests/fuzz/harness_plaid_webhook.py: 64 signature bytes take 86 base64url
    # characters, the last carrying 4 unused bits; flipping them must not still verify.
    fake, key, _, clock, verifier = setup
    header = fake.sign(BODY, key, iat=int(clock.now))
    await verifier.verify(BODY, header)
    last = header[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(last) ^ 1]  # same 2 used bits, different unused bits
    with pytest.raises(WebhookRejected) as caught:
        await verifier.verify(BODY, header[:-1] + twin)
    assert caught.value.reason is RejectReason.MALFORMED_HEADER
