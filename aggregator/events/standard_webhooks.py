"""Signing as the Standard Webhooks specification describes (standardwebhooks.com, v1).

Spec "Signature scheme": the signed content is ``{webhook-id}.{webhook-timestamp}.{body}``,
signed with HMAC-SHA256 under the secret's bytes (the base64 text after ``whsec_``);
``webhook-signature`` is a space-delimited list of ``v1,<base64 signature>``, one per
secret in use, so a receiver can rotate: it accepts the message if *any* signature
verifies with a secret it holds. ``webhook-timestamp`` is integer Unix seconds, which
the receiver checks against its clock to refuse replays.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24-64 random bytes


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret."""
    if not secret.startswith(PREFIX):
        raise ValueError("a signing secret starts with whsec_")
    return base64.b64decode(secret[len(PREFIX):], validate=True)


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of a message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def headers(
    secrets_in_use: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three ``webhook-*`` headers, signed with every secret in use (newest first)."""
    if not secrets_in_use:
        raise ValueError("at least one secret is needed to sign")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(s, msg_id, timestamp, body) for s in secrets_in_use
        ),
    }
