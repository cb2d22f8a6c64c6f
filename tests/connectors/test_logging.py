"""The redaction filter scrubs credentials from log records, authlib's included."""

from __future__ import annotations

import logging

import httpx
import pytest

from connectors import RedactingFilter, install_redaction, redact
from connectors.oauth._authlib import AuthlibClient

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("Authorization: Bearer abc.DEF-123", "abc.DEF-123", "Authorization: Bearer"),
        ("headers={'Authorization': 'Basic Z3c6c2VjcmV0'}", "Z3c6c2VjcmV0", "Basic"),
        ("(b'authorization', b'Basic Z3c6c2VjcmV0')", "Z3c6c2VjcmV0", "authorization"),
        ("{'access_token': 'tok-123', 'token_type': 'Bearer'}", "tok-123", "'token_type'"),
        ('{"refresh_token": "rt-456", "expires_in": 300}', "rt-456", '"expires_in": 300'),
        ("grant_type=refresh_token&refresh_token=rt-789", "rt-789", "grant_type=refresh_token"),
        ("GET /cb?code=Splx10BeZ&state=st-1&iss=https://b.test", "Splx10BeZ", "iss=https://b.test"),
        ("GET /cb?code=Splx10BeZ&state=st-1&iss=https://b.test", "st-1", "/cb?code="),
        ("Using code_verifier: 'vvv-verifier-vvv'", "vvv-verifier-vvv", "Using code_verifier"),
        ("client_secret=s3cr3t&client_id=gw", "s3cr3t", "client_id=gw"),
        (f"id_token {JWT} received", JWT, "received"),
        (f"client_assertion={JWT}", JWT, "client_assertion="),
        ("token=tok-abc&token_type_hint=refresh_token", "tok-abc", "token_type_hint"),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
            "MIIEvQIBADANBg",
            "[REDACTED-PRIVATE-KEY]",
        ),
    ],
)
def test_redact_removes_credentials(text: str, secret: str, kept: str) -> None:
    scrubbed = redact(text)

    assert secret not in scrubbed
    assert kept in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "error code: 400 from bank",
        "status_code=503 retry_after=30",
        "token endpoint https://bank.test/token answered invalid_grant",
        "code_challenge_method=S256",
    ],
)
def test_redact_leaves_prose_alone(text: str) -> None:
    assert redact(text) == text


def test_filter_formats_arguments_and_scrubs_exceptions() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "token response %r", ({"access_token": "t-1"},), None
    )
    try:
        raise ValueError("refresh_token=r-2 rejected")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()

    assert RedactingFilter().filter(record) is True

    assert "t-1" not in record.getMessage()
    assert record.exc_text is not None
    assert "r-2" not in record.exc_text
    assert "rejected" in record.exc_text


async def test_authlib_debug_output_with_a_verifier_is_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # authlib's web-client integration logs the PKCE verifier at DEBUG; run that real code.
    from authlib.integrations.base_client.sync_app import OAuth2Base

    install_redaction()
    caplog.set_level(logging.DEBUG)
    verifier = "verifier-" + "x" * 50
    async with httpx.AsyncClient() as http:
        client = AuthlibClient(http, client_id="gw", code_challenge_method="S256")
        OAuth2Base._create_oauth2_authorization_url(
            client, "https://bank.test/authorize", code_verifier=verifier
        )

    authlib_records = [r for r in caplog.records if r.name.startswith("authlib")]
    assert any("Using code_verifier" in r.getMessage() for r in authlib_records)
    assert verifier not in caplog.text


def test_records_of_other_loggers_are_scrubbed_at_root_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    install_redaction()  # after caplog added its handler to the root logger

    logging.getLogger("some.library").info("sent refresh_token=rt-secret-1")

    assert "rt-secret-1" not in caplog.text
    assert "refresh_token=[REDACTED]" in caplog.text


def test_install_is_idempotent() -> None:
    first = install_redaction()
    second = install_redaction()

    assert first is second
    assert logging.getLogger("authlib").filters.count(first) == 1
    assert logging.getLogger().filters.count(first) == 1


def test_redaction_is_idempotent() -> None:
    text = "GET /cb?code=abc&state=def Authorization: Bearer xyz {'access_token': 't'}"

    once = redact(text)

    assert redact(once) == once
