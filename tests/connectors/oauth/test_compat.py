"""check_compatibility: the plan and findings for a profile against a bank's metadata."""

from __future__ import annotations

from typing import Any

import pytest

from connectors import Severity, check_compatibility
from connectors.oauth.rfc8414 import parse_metadata
from tests.connectors.oauth.conftest import ISSUER, metadata_document, profile_for


def _check(
    profile_changes: dict[str, Any] | None = None,
    auth: str = "client_secret_basic",
    signing_alg: str | None = None,
    **metadata: Any,
) -> Any:
    md = parse_metadata(metadata_document(**metadata), expected_issuer=ISSUER, source="x")
    return check_compatibility(
        profile_for(auth, **(profile_changes or {})), md, signing_alg=signing_alg
    )


def _topics(result: Any, severity: Severity) -> set[str]:
    return {f.topic for f in result.findings if f.severity is severity}


def test_sandbox_like_bank_is_compatible() -> None:
    result = _check()

    assert result.ok
    assert (result.pkce_method, result.use_par) == ("S256", True)


@pytest.mark.parametrize(
    ("profile_changes", "metadata", "topic"),
    [
        ({}, {"code_challenge_methods_supported": None}, "pkce"),
        ({"use_par": True}, {"pushed_authorization_request_endpoint": None}, "par"),
        ({"use_par": False}, {"require_pushed_authorization_requests": True}, "par"),
        ({}, {"token_endpoint_auth_methods_supported": ["private_key_jwt"]}, "client_auth"),
    ],
)
def test_problems(profile_changes: dict[str, Any], metadata: dict[str, Any], topic: str) -> None:
    result = _check(profile_changes, **metadata)

    assert not result.ok
    assert topic in _topics(result, Severity.PROBLEM)


def test_signing_algorithm_must_be_accepted() -> None:
    result = _check(
        auth="private_key_jwt",
        signing_alg="PS256",
        token_endpoint_auth_signing_alg_values_supported=["ES256"],
    )

    assert "client_auth" in _topics(result, Severity.PROBLEM)


@pytest.mark.parametrize(
    ("profile_changes", "metadata", "topic"),
    [
        ({}, {"revocation_endpoint": None}, "revocation"),
        ({}, {"scopes_supported": ["openid", "accounts"]}, "scopes"),
        ({"hooks": []}, {}, "scopes"),  # offline_access without prompt=consent
        ({}, {"revocation_endpoint_auth_methods_supported": ["private_key_jwt"]}, "revocation"),
    ],
)
def test_warnings(profile_changes: dict[str, Any], metadata: dict[str, Any], topic: str) -> None:
    result = _check(profile_changes, **metadata)

    assert result.ok
    assert topic in _topics(result, Severity.WARNING)


def test_use_par_false_skips_an_optional_par_endpoint() -> None:
    result = _check({"use_par": False})

    assert result.ok
    assert result.use_par is False


def test_dpop_profile_needs_an_algorithm_in_common_with_the_bank() -> None:
    dpop = {"sender_constraint": "dpop"}
    assert "dpop" in _topics(_check(dpop, dpop_signing_alg_values_supported=["RS256"]),
                             Severity.PROBLEM)
    assert "dpop" in _topics(_check(dpop), Severity.WARNING)  # not advertised: ES256 anyway
    assert _check(dpop, dpop_signing_alg_values_supported=["ES256"]).ok
