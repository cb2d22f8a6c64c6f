"""`aggregator operators create`, through a parser built from `register` alone."""

from __future__ import annotations

import asyncio
import io

import pytest
from sqlalchemy import select

from aggregator.commands import operators
from aggregator.errors import ConfigError
from aggregator.models import Operator, OperatorRole
from aggregator.operators import sign_in
from aggregator.store import RegionRouter
from tests.aggregator.commands._cli import command_runner

run = command_runner(operators)


async def test_create_reads_the_password_from_stdin_and_writes_every_region(
    config: str, region_router: RegionRouter, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("operator password 1\n"))
    code = await asyncio.to_thread(run, "--config", config, "operators", "create", "ada",
                                   "--role", "admin", "--password-stdin")
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("operator opr_")
    assert "operator password 1" not in out
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            row = (await session.execute(select(Operator))).scalar_one()
        assert (row.name, row.role) == ("ada", OperatorRole.ADMIN)
    assert await sign_in(region_router, "ada", "operator password 1") is not None


def test_create_refuses_an_empty_or_short_password(
    config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    with pytest.raises(ConfigError, match="no password"):
        run("--config", config, "operators", "create", "ada", "--role", "viewer",
            "--password-stdin")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(ConfigError, match="12-1024"):
        run("--config", config, "operators", "create", "ada", "--role", "viewer",
            "--password-stdin")
