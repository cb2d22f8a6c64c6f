"""The local keyring's file hygiene (vault/local.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vault import (
    InsecureKeyStore,
    KeyProvider,
    LocalKeyringConfig,
    ProviderMisconfigured,
    open_provider,
)


def _keyring(tmp_path: Path, kek_id: str = "eu") -> tuple[Path, KeyProvider]:
    provider = open_provider(LocalKeyringConfig(directory=tmp_path / "keys", kek_id=kek_id))
    provider.ensure_kek()
    return tmp_path / "keys" / kek_id, provider


def test_init_creates_private_directories_and_files(tmp_path: Path) -> None:
    os.umask(0o022)
    kek_dir, _ = _keyring(tmp_path)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE(kek_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((kek_dir / "v1.key").stat().st_mode) == 0o600
    assert (kek_dir / "v1.key").stat().st_size == 32


@pytest.mark.parametrize("target", ["keys", "keys/eu", "keys/eu/v1.key"])
def test_refuses_to_start_when_others_can_read(tmp_path: Path, target: str) -> None:
    _keyring(tmp_path)
    path = tmp_path / target
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) | 0o044)
    provider = open_provider(LocalKeyringConfig(directory=tmp_path / "keys", kek_id="eu"))
    with pytest.raises(InsecureKeyStore, match=r"chmod 0[67]00") as info:
        provider.ensure_kek()
    assert str(path) in str(info.value)


def test_refuses_to_unwrap_when_files_became_readable(tmp_path: Path) -> None:
    kek_dir, provider = _keyring(tmp_path)
    wrapped = provider.generate_data_key("dek_a").wrapped
    os.chmod(kek_dir / "v1.key", 0o644)
    fresh = open_provider(LocalKeyringConfig(directory=tmp_path / "keys", kek_id="eu"))
    with pytest.raises(InsecureKeyStore):
        fresh.unwrap(wrapped)


def test_generate_without_init_says_how_to_fix(tmp_path: Path) -> None:
    provider = open_provider(LocalKeyringConfig(directory=tmp_path / "none", kek_id="eu"))
    with pytest.raises(ProviderMisconfigured, match="aggregator keys init"):
        provider.generate_data_key("dek_a")


def test_rejects_kek_ids_that_escape_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ProviderMisconfigured, match="kek_id"):
        open_provider(LocalKeyringConfig(directory=tmp_path, kek_id="../etc"))


def test_rotation_never_overwrites_an_existing_version(tmp_path: Path) -> None:
    kek_dir, provider = _keyring(tmp_path)
    v1 = (kek_dir / "v1.key").read_bytes()
    assert provider.rotate() == 2
    assert (kek_dir / "v1.key").read_bytes() == v1
    assert (kek_dir / "v2.key").read_bytes() != v1


_CRASH_IN_ROTATE = """
import os, sys
from pathlib import Path
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from vault import LocalKeyringConfig, open_provider
provider = open_provider(LocalKeyringConfig(directory=Path(sys.argv[1]), kek_id="eu"))
AESGCM.generate_key = staticmethod(lambda bit_length: os._exit(9))  # dies mid-write
provider.rotate()
"""


def test_a_crash_while_rotating_leaves_no_short_key_and_rotation_goes_on(
    tmp_path: Path,
) -> None:
    kek_dir, provider = _keyring(tmp_path)
    wrapped = provider.generate_data_key("dek-before").wrapped
    crashed = subprocess.run([sys.executable, "-c", _CRASH_IN_ROTATE, str(tmp_path / "keys")],
                             capture_output=True, timeout=60, check=False)
    assert crashed.returncode == 9, crashed.stderr
    assert not (kek_dir / "v2.key").exists()  # never a 0-byte key under its real name
    fresh = open_provider(LocalKeyringConfig(directory=tmp_path / "keys", kek_id="eu"))
    assert len(fresh.unwrap(wrapped)) == 32
    assert fresh.rotate() == 2  # the next rotation is not blocked
    assert len((kek_dir / "v2.key").read_bytes()) == 32
    assert fresh.generate_data_key("dek-after").wrapped.kek_version == 2
