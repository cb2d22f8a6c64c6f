"""Token responses: the consent's end, when the bank names it in a field of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors import BankProtocolError, TokenSet

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
BASE = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 300}


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-08-29T12:00:00Z", datetime(2026, 8, 29, 12, 0, tzinfo=UTC)),
    ("2026-08-29T14:00:00+02:00", datetime(2026, 8, 29, 12, 0, tzinfo=UTC)),
    (86400 * 90, NOW + timedelta(days=90)),
    (None, None),
])
def test_the_profile_named_field_gives_the_consent_expiry(
    value: object, expected: datetime | None
) -> None:
    tokens = TokenSet.from_response({**BASE, "consent_expires": value}, now=NOW,
                                    consent_expiry_field="consent_expires")

    assert tokens.consent_expires_at == expected
    if tokens.consent_expires_at is not None:
        assert tokens.consent_expires_at.utcoffset() == timedelta(0)


def test_without_a_named_field_the_answer_carries_no_consent_expiry() -> None:
    tokens = TokenSet.from_response({**BASE, "consent_expires": "2026-08-29T12:00:00Z"},
                                    now=NOW)

    assert tokens.consent_expires_at is None


@pytest.mark.parametrize("value", ["next tuesday", "2026-08-29T12:00:00", True, -5, [1]])
def test_a_malformed_consent_expiry_is_a_protocol_error_naming_the_field(value: object
                                                                        ) -> None:
    with pytest.raises(BankProtocolError, match="consent_expires") as caught:
        TokenSet.from_response({**BASE, "consent_expires": value}, now=NOW,
                               consent_expiry_field="consent_expires")
    assert "tuesday" not in str(caught.value)
