"""`aggregator keys init | status | rotate` on the embedded default."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aggregator.cli import main


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(var)
    return tmp_path


def test_init_status_rotate(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "status"]) == 1
    assert "run `aggregator keys init --region eu`" in capsys.readouterr().out

    assert main(["keys", "init"]) == 0
    assert "eu: local KEK 'eu' ready (version 1)" in capsys.readouterr().out

    assert main(["keys", "rotate", "--region", "eu"]) == 0
    assert "rotated to version 2" in capsys.readouterr().out

    assert main(["keys", "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["eu"]["kek_versions"] == [1, 2]
    assert report["us"]["kek_versions"] == [1]
    assert report["eu"]["provider"] == "local"
    key_bytes = (workdir / "var/keys/eu/v1.key").read_bytes()
    assert key_bytes.hex() not in json.dumps(report)


def test_unknown_region_is_named(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "rotate", "--region", "mars"]) == 2
    assert "unknown region 'mars'" in capsys.readouterr().err


def test_status_refuses_a_keyring_others_can_read(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "init"])
    capsys.readouterr()
    os.chmod(workdir / "var/keys/eu", 0o755)
    assert main(["keys", "status"]) == 2
    err = capsys.readouterr().err
    assert "chmod 0700" in err
    assert "var/keys/eu" in err
