"""Why a Plaid webhook was refused: one enum for logs and metrics, one error carrying it.

The values are stable, low-cardinality metric labels; neither they nor the error's
message ever include the body, the JWS or the key material.
"""

from __future__ import annotations

import enum

from connectors.errors import ConnectorError

__all__ = ["RETRYABLE", "RejectReason", "WebhookRejected"]


class RejectReason(enum.Enum):
    """Why verification failed, in the order the checks run."""

    BODY_TOO_LARGE = "body_too_large"  # raw body above the limit; nothing else was parsed
    MISSING_HEADER = "missing_header"  # no Plaid-Verification header
    MALFORMED_HEADER = "malformed_header"  # not a compact JWS with a JSON header
    BAD_ALGORITHM = "bad_algorithm"  # header alg is not exactly "ES256" (none, HS256, ...)
    UNKNOWN_KID = "unknown_kid"  # Plaid has no key with this kid (for our environment)
    KID_RATE_LIMITED = "kid_rate_limited"  # unknown kid not fetched yet: retry (503)
    KEY_UNAVAILABLE = "key_unavailable"  # Plaid could not be asked (outage, timeout): 503
    KEY_EXPIRED = "key_expired"  # the key's expired_at is set and in the past
    BAD_KEY = "bad_key"  # Plaid's key document is not an ES256 P-256 JWK
    BAD_SIGNATURE = "bad_signature"  # the ES256 signature does not verify
    MALFORMED_CLAIMS = "malformed_claims"  # payload lacks an integer iat or a SHA-256 hex
    STALE = "stale"  # iat older than the maximum age (replay of an old webhook)
    FROM_FUTURE = "from_future"  # iat ahead of our clock beyond the allowed skew
    BODY_MISMATCH = "body_mismatch"  # SHA-256 of the raw body differs from the signed one
    MALFORMED_BODY = "malformed_body"  # verified, but not a JSON object with webhook fields


#: Refusals that say "not now" rather than "never": Plaid should retry them (503).
RETRYABLE = frozenset({RejectReason.KID_RATE_LIMITED, RejectReason.KEY_UNAVAILABLE})


class WebhookRejected(ConnectorError):
    """A Plaid webhook failed verification; ``reason`` says which check refused it.

    ``retry_after`` (seconds) is set for the :data:`RETRYABLE` reasons: when a retry can
    succeed.
    """

    code = "webhook_rejected"

    def __init__(self, reason: RejectReason, *, retry_after: float | None = None) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(f"plaid webhook rejected: {reason.value}")

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE
