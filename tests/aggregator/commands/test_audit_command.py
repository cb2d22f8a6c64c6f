"""`aggregator audit verify`: intact chains pass, a tampered event is named, exit 1."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from aggregator import cli
from aggregator.audit import record
from aggregator.ids import new_id
from aggregator.settings import load_settings
from aggregator.store import RegionRouter


@pytest.fixture
def migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("keys", "migrate", "audit"))
    assert cli.main(["keys", "init"]) == 0
    assert cli.main(["migrate"]) == 0
    return tmp_path


async def _append(region: str, n: int) -> list[str]:
    async with RegionRouter(load_settings(environ={})) as router:
        ids = []
        for _ in range(n):
            async with router.session(region) as session, session.begin():
                event = await record(session, actor="operator", action="keys.rotated",
                                     target_id=new_id("usr", region))
                ids.append(event.id)
        return ids


def test_verify_passes_then_names_the_tampered_event(
    migrated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = asyncio.run(_append("eu", 3))
    asyncio.run(_append("us", 1))
    capsys.readouterr()
    assert cli.main(["audit", "verify"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "eu: 3 events, chain intact", "us: 1 events, chain intact",
    ]

    with sqlite3.connect(migrated / "var" / "eu.sqlite3") as db:
        db.execute("UPDATE audit_events SET actor = 'worker' WHERE seq = 2")
    db.close()
    assert cli.main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"eu: BROKEN at event {ids[1]} (seq 2) after 1 intact events" in out
    assert "the event was altered" in out
    assert "us: 1 events, chain intact" in out

    assert cli.main(["audit", "verify", "--region", "us"]) == 0
