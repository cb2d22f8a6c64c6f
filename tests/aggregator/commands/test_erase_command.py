"""`aggregator erase USER_ID --wait` shows each step; `--status` lists open requests."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from aggregator import cli
from aggregator.applications import create_application
from aggregator.custody import open_custody
from aggregator.settings import load_settings
from aggregator.store import RegionRouter
from aggregator.users import create_user


@pytest.fixture
def migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("keys", "migrate", "erase"))
    assert cli.main(["keys", "init"]) == 0
    assert cli.main(["migrate"]) == 0
    return tmp_path


async def _user(region: str) -> str:
    settings = load_settings(environ={})
    async with RegionRouter(settings) as router:
        app_id, _ = await create_application(router, "Budgetly", [])
        custody = await open_custody(router, settings)
        try:
            async with router.session(region) as session, session.begin():
                user = await create_user(session, custody[region], app_id, "a@example.test")
        finally:
            for keys in custody.values():
                keys.close()
        return user.id


def test_erase_waits_with_progress_and_status_lists_open_requests(
    migrated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    waited, queued = asyncio.run(_user("eu")), asyncio.run(_user("us"))
    capsys.readouterr()

    assert cli.main(["erase", waited, "--wait"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("era_eu_")
    assert lines[1:-1] == [
        "[1/5] new activity stopped (connections revoked locally)",
        "[2/5] grants revoked at the banks (failures recorded)",
        "[3/5] rows deleted",
        "[4/5] data key destroyed (crypto-shredded)",
        "[5/5] receipt written",
    ]
    assert lines[-1].endswith(": completed")

    assert cli.main(["erase", queued]) == 0
    request_id = capsys.readouterr().out.split(":")[0]
    assert cli.main(["erase", "--status"]) == 0
    out = capsys.readouterr().out
    assert "eu: 0 open" in out
    assert f"{request_id} requested" in out

    assert cli.main(["erase", waited]) == 0  # idempotent, also once the user is gone
    assert "completed" in capsys.readouterr().out
    assert cli.main(["erase", "usr_ap_aaaaaaaaaaaaaaaaaaaaaaaaaa"]) == 2
