"""`aggregator migrate`: every configured region reaches the head revision, idempotently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aggregator import cli
from aggregator.keyring import LocalKeyringInProductionWarning
from aggregator.store import head_revision


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(var)
    # Until the lead lists them in cli.COMMAND_MODULES.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("keys", "migrate", "audit"))
    return tmp_path


def test_migrate_needs_the_regions_keys_first(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate", "--region", "eu"]) == 2
    assert "run `aggregator keys init`" in capsys.readouterr().err


def test_migrate_upgrades_every_region_and_prints_its_revision(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["keys", "init"]) == 0
    capsys.readouterr()
    for _ in range(2):  # the second run finds nothing to do
        assert cli.main(["migrate"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [
            f"{region}: at revision {head_revision()} (head); pepper ready"
            for region in ("eu", "us")
        ]
    assert (workdir / "var" / "eu.sqlite3").is_file()
    assert (workdir / "var" / "us.sqlite3").is_file()


@pytest.mark.postgres
def test_migrate_upgrades_postgresql_regions(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    clean_postgres: dict[str, str],
) -> None:
    monkeypatch.setenv("AGGREGATOR_REGIONS", "eu")
    monkeypatch.setenv("AGGREGATOR_REGION_EU_DATABASE_URL", clean_postgres["eu"])
    with pytest.warns(LocalKeyringInProductionWarning):  # a test keyring for a server DB
        assert cli.main(["keys", "init"]) == 0
    with pytest.warns(LocalKeyringInProductionWarning):
        assert cli.main(["migrate"]) == 0
    assert f"eu: at revision {head_revision()} (head)" in capsys.readouterr().out
