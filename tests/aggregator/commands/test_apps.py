"""`aggregator apps create`, through a parser built from `register` alone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from aggregator.applications import authenticate
from aggregator.commands import apps
from aggregator.errors import ConfigError, SchemaOutOfDate
from aggregator.models import ApiKey, Application
from aggregator.store import RegionRouter
from tests.aggregator.commands._cli import command_runner

run = command_runner(apps)


async def test_create_prints_a_key_once_that_authenticates_in_every_region(
    config: str, region_router: RegionRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command runs its own event loop, so it runs in a thread here.
    code = await asyncio.to_thread(run, "--config", config, "apps", "create", "Budgetly",
                                   "--redirect-uri", "https://budgetly.test/linked",
                                   "--redirect-uri", "http://127.0.0.1:3000/cb")
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("application app_")
    assert out[0].endswith("regions eu, us")
    key = out[1].removeprefix("API key (shown once, store it now): ")
    assert key.startswith("agk_")
    app_id = out[0].split()[1]
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            assert await authenticate(session, key) == app_id
            app = await session.get(Application, app_id)
            stored = (await session.execute(select(ApiKey.key_digest))).scalars().all()
        assert app is not None
        assert app.redirect_uris == ["https://budgetly.test/linked", "http://127.0.0.1:3000/cb"]
        assert len(stored) == 1
        assert key.encode() not in bytes(stored[0])


@pytest.mark.parametrize("uri", [
    "http://budgetly.test/cb", "https://budgetly.test/cb#frag", "budgetly://cb", "/cb",
])
def test_create_refuses_redirect_uris_that_could_leak(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ConfigError, match="--redirect-uri"):
        run("apps", "create", "Budgetly", "--redirect-uri", uri)


def test_create_needs_migrated_regions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(var)
    with pytest.raises(SchemaOutOfDate, match="aggregator migrate"):
        run("apps", "create", "Budgetly", "--redirect-uri", "https://budgetly.test/cb")


def test_create_requires_a_redirect_uri(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run("apps", "create", "Budgetly")
    assert "--redirect-uri" in capsys.readouterr().err
