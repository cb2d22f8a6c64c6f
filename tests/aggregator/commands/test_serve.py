"""`aggregator serve` refuses to start on anything wrong, before opening its port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aggregator.commands import keys, migrate, serve
from aggregator.errors import ConfigError, SchemaOutOfDate
from connectors import ProfileError
from tests.aggregator.commands._cli import command_runner
from vault import VaultError

run = command_runner(keys, migrate, serve)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith(("AGGREGATOR_", "SANDBOX_BANK_"))]:
        monkeypatch.delenv(var)
    return tmp_path


def test_bad_settings_stop_start_up(workdir: Path) -> None:
    (workdir / "aggregator.toml").write_text("[regions.eu]\ndatabase = 'typo'\n")
    with pytest.raises(ConfigError, match=r"unknown setting regions\.eu\.database"):
        run("serve")
    (workdir / "aggregator.toml").unlink()
    with pytest.raises(ConfigError, match="not a TCP port"):
        run("serve", "--port", "70000")


def test_a_bad_bank_profile_stops_start_up(workdir: Path) -> None:
    banks = workdir / "banks"
    banks.mkdir()
    (banks / "broken.toml").write_text('id = "broken"\nissuer = 42\n')
    (workdir / "aggregator.toml").write_text('[banks]\ndirectories = ["banks"]\n')
    with pytest.raises(ProfileError, match=r"broken\.toml"):
        run("serve")


def test_missing_bank_credentials_stop_start_up(workdir: Path) -> None:
    banks = workdir / "banks"
    banks.mkdir()
    (banks / "strict.toml").write_text(
        'id = "strict"\ndisplay_name = "Strict"\ncountry = "FR"\nregion = "eu"\n'
        'issuer = "https://auth.strict.test"\nscopes = ["accounts"]\nclient_id = "c"\n'
        'client_auth_method = "client_secret_basic"\nclient_secret_env = "STRICT_SECRET"\n'
        '[api]\ndialect = "berlin_group"\nbase_url = "https://api.strict.test/v1"\n'
    )
    (workdir / "aggregator.toml").write_text('[banks]\ndirectories = ["banks"]\n')
    with pytest.raises(ProfileError, match="STRICT_SECRET is not set"):
        run("serve")


def test_unmigrated_regions_and_missing_keys_stop_start_up(workdir: Path) -> None:
    with pytest.raises(SchemaOutOfDate, match="aggregator migrate"):
        run("serve", "--port", "0")
    run("keys", "init")
    run("migrate")
    for kek in (workdir / "var" / "keys" / "us").iterdir():
        kek.unlink()  # the us pepper can no longer be unwrapped
    with pytest.raises(VaultError):
        run("serve", "--port", "0")
