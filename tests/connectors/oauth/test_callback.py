"""parse_callback: state, expiry, iss, error responses and the code, in that order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors import (
    AuthorizationExpired,
    BankMisconfigured,
    BankProtocolError,
    ConnectorError,
    ConsentRejected,
    IssuerMismatch,
    PendingAuthorization,
    ServerMetadata,
    StateMismatch,
    parse_callback,
)

ISSUER = "https://bank.test"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def metadata(iss_supported: bool = True) -> ServerMetadata:
    return ServerMetadata(
        issuer=ISSUER,
        authorization_endpoint=f"{ISSUER}/authorize",
        token_endpoint=f"{ISSUER}/token",
        source="test",
        authorization_response_iss_parameter_supported=iss_supported,
    )


@pytest.fixture
def pending() -> PendingAuthorization:
    return PendingAuthorization.new("bank", "https://gw.test/cb", with_nonce=True, now=NOW)


def test_returns_the_code(pending: PendingAuthorization) -> None:
    query = {"code": "c-1", "state": pending.state, "iss": ISSUER}

    assert parse_callback(pending, query, metadata(), now=NOW) == "c-1"


def test_iss_may_be_absent_when_not_advertised(pending: PendingAuthorization) -> None:
    query = {"code": "c-1", "state": pending.state}

    assert parse_callback(pending, query, metadata(iss_supported=False), now=NOW) == "c-1"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"code": "c"}, StateMismatch),
        ({"code": "c", "state": ""}, StateMismatch),
        ({"code": "c", "state": "someone-elses-state"}, StateMismatch),
        ({"code": "c", "state": "{state}"}, IssuerMismatch),  # iss stripped
        ({"code": "c", "state": "{state}", "iss": "https://attacker.test"}, IssuerMismatch),
        (
            {"error": "access_denied", "state": "{state}", "iss": "https://attacker.test"},
            IssuerMismatch,  # iss is checked before the error is believed
        ),
        ({"error": "access_denied", "state": "{state}", "iss": ISSUER}, ConsentRejected),
        # Our configuration, not the user: an operator fixes `scopes` (issue 14).
        ({"error": "invalid_scope", "state": "{state}", "iss": ISSUER}, BankMisconfigured),
        ({"error": "unauthorized_client", "state": "{state}", "iss": ISSUER},
         BankMisconfigured),
        ({"error": "invalid_request", "state": "{state}", "iss": ISSUER}, BankProtocolError),
        ({"state": "{state}", "iss": ISSUER}, BankProtocolError),
    ],
)
def test_bad_callbacks_raise_typed_errors(
    pending: PendingAuthorization, query: dict[str, str], error: type[ConnectorError]
) -> None:
    query = {k: v.format(state=pending.state) for k, v in query.items()}

    with pytest.raises(error) as caught:
        parse_callback(pending, query, metadata(), now=NOW)

    assert type(caught.value) is error
    assert pending.state not in str(caught.value)


def test_expired_pending_authorization(pending: PendingAuthorization) -> None:
    query = {"code": "c", "state": pending.state, "iss": ISSUER}

    with pytest.raises(AuthorizationExpired):
        parse_callback(pending, query, metadata(), now=NOW + timedelta(minutes=10))


def test_foreign_state_wins_over_expiry(pending: PendingAuthorization) -> None:
    query = {"code": "c", "state": "foreign", "iss": ISSUER}

    with pytest.raises(StateMismatch) as caught:
        parse_callback(pending, query, metadata(), now=NOW + timedelta(hours=1))

    assert not isinstance(caught.value, AuthorizationExpired)


def test_error_code_from_the_bank_is_sanitised(pending: PendingAuthorization) -> None:
    query = {"error": "bad\nline\x00", "state": pending.state, "iss": ISSUER}

    with pytest.raises(BankProtocolError) as caught:
        parse_callback(pending, query, metadata(), now=NOW)

    assert "\n" not in str(caught.value)
