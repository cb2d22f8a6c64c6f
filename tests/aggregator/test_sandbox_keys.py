"""The sandbox client keys: generated once in the data directory, private, shared."""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from aggregator.bank_profiles import gateway_profiles
from aggregator.errors import ConfigError
from aggregator.sandbox.config import DEV_REDIRECT_URIS
from aggregator.sandbox.modes import MODES
from aggregator.sandbox_keys import (
    KEY_DIRECTORY,
    _create_once,
    sandbox_key_file,
    sandbox_signer,
)
from aggregator.settings import Settings
from connectors import load_client_credentials


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_key_is_generated_once_with_private_modes(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    first = sandbox_signer(data_dir, "sandbox-fapi2-client", "ES256")
    again = sandbox_signer(data_dir, "sandbox-fapi2-client", "ES256")

    assert first.public_jwk() == again.public_jwk()
    assert first.algorithm == "ES256"
    path = data_dir / KEY_DIRECTORY / "sandbox-fapi2-client.pem"
    assert (_mode(path.parent), _mode(path)) == (0o700, 0o600)
    assert os.listdir(path.parent) == [path.name]  # no candidate file left behind
    rsa = sandbox_signer(data_dir, "sandbox-obie-client", "PS256", key_id="kid-1")
    assert (rsa.algorithm, rsa.public_jwk()["kty"], rsa.public_jwk()["kid"]) == \
        ("PS256", "RSA", "kid-1")


def test_the_first_key_linked_into_place_wins(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    _create_once(path, b"first")
    _create_once(path, b"second")  # a process that lost the race

    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["k.pem"]


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    start = threading.Barrier(8)
    seen: list[bytes] = []

    def starter() -> None:
        start.wait()
        seen.append(sandbox_key_file(tmp_path, "sandbox-fapi2-client", "ES256").read_bytes())

    threads = [threading.Thread(target=starter) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(seen) == 8
    assert len(set(seen)) == 1
    assert sorted(os.listdir(tmp_path / KEY_DIRECTORY)) == ["sandbox-fapi2-client.pem"]


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = sandbox_key_file(tmp_path, "sandbox-fapi2-client", "ES256")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 0600"):
        sandbox_key_file(tmp_path, "sandbox-fapi2-client", "ES256")
    path.chmod(0o600)
    path.parent.chmod(0o755)
    with pytest.raises(ConfigError, match="chmod 0700"):
        sandbox_key_file(tmp_path, "sandbox-fapi2-client", "ES256")


def test_a_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    sandbox_key_file(tmp_path, "k", "ES256")
    with pytest.raises(ConfigError, match="delete the file"):
        sandbox_signer(tmp_path, "k", "PS256")


@pytest.mark.parametrize("bank_id", ["sandbox-fapi2", "sandbox-obie"])
def test_the_gateway_signs_with_the_key_the_sandbox_bank_registers(
    settings: Settings, bank_id: str
) -> None:
    profile = gateway_profiles(replace(settings, sandbox_banks=True))[bank_id]
    _, signer = load_client_credentials(profile)
    bank = MODES[bank_id](DEV_REDIRECT_URIS, settings.data_dir)

    assert signer is not None
    assert profile.private_key_file is not None
    assert profile.private_key_file.parent == settings.data_dir / KEY_DIRECTORY
    registered = bank.config.clients[0].jwks
    assert isinstance(registered, dict)
    assert registered["keys"] == [signer.public_jwk()]
