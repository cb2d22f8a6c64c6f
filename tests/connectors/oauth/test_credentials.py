"""load_client_credentials: secrets and keys come from where the profile points."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import ProfileError, load_client_credentials, load_profiles
from tests.connectors.oauth.conftest import profile_for


def test_secret_from_the_environment() -> None:
    profile = profile_for()

    secret, signer = load_client_credentials(profile, {"SANDBOX_BANK_CLIENT_SECRET": "s-1"})

    assert signer is None
    assert secret is not None
    assert secret.reveal() == "s-1"
    assert "s-1" not in repr(secret)


def test_missing_secret_names_the_variable() -> None:
    with pytest.raises(ProfileError) as caught:
        load_client_credentials(profile_for(), {})

    assert caught.value.key == "client_secret_env"
    assert "SANDBOX_BANK_CLIENT_SECRET" in caught.value.problem


def test_loopback_sandbox_falls_back_to_its_documented_dev_secret() -> None:
    profile = load_profiles([])["sandbox-eu"]

    secret, _ = load_client_credentials(profile, {})

    assert secret is not None
    assert secret.reveal() == "sandbox-dev-secret"


def test_private_key_from_env_and_file(ec_pem: bytes, tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(ec_pem)

    _, from_env = load_client_credentials(
        profile_for("private_key_jwt"), {"TEST_CLIENT_KEY": ec_pem.decode()}
    )
    _, from_file = load_client_credentials(
        profile_for("private_key_jwt", private_key_pem_env=None, private_key_file=str(key_file)),
        {},
    )

    assert from_env is not None
    assert from_file is not None
    assert from_env.public_jwk() == from_file.public_jwk()


def test_unreadable_key_is_a_profile_error() -> None:
    with pytest.raises(ProfileError) as caught:
        load_client_credentials(profile_for("private_key_jwt"), {"TEST_CLIENT_KEY": "nope"})

    assert caught.value.key == "private_key_pem_env"
    assert "nope" not in str(caught.value)
