"""Our signatures, checked by the reference implementation (PyPI ``standardwebhooks``)."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from aggregator.events.standard_webhooks import headers, new_secret, secret_bytes
from aggregator.models.base import utcnow


def test_secret_is_whsec_base64_of_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32 == len(secret_bytes(secret))
    assert new_secret() != secret


def test_signature_verifies_with_the_reference_implementation() -> None:
    secret, body = new_secret(), b'{"type":"user.erased"}'
    signed = headers([secret], "msg_eu_x", int(utcnow().timestamp()), body)
    assert Webhook(secret).verify(body, signed) == {"type": "user.erased"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, signed)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", signed)


def test_rotation_signs_with_both_secrets_each_verifiable_alone() -> None:
    new, old, body = new_secret(), new_secret(), b"{}"
    signed = headers([new, old], "msg_eu_y", int(utcnow().timestamp()), body)
    assert signed["webhook-signature"].count("v1,") == 2
    Webhook(new).verify(body, signed)
    Webhook(old).verify(body, signed)
