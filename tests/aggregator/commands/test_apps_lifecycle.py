"""`aggregator apps list|show|update|rotate-key|revoke-key|disable` (issue 16 L8, issue 17).

Each command runs against real stores (SQLite or PostgreSQL per region), and the key it
touches is then presented to :func:`authenticate` in every region, as a request would be.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from sqlalchemy import select

from aggregator.applications import UnknownApplication, authenticate
from aggregator.audit import verify
from aggregator.errors import ConfigError, InvalidApiKey
from aggregator.models import AuditEvent
from aggregator.store import RegionRouter
from tests.aggregator.commands.test_apps import run


async def cli(capsys: pytest.CaptureFixture[str], config: str, *argv: str) -> Any:
    """Run ``aggregator --config … apps ARGV --json`` in a thread; its parsed stdout."""
    capsys.readouterr()
    assert await asyncio.to_thread(run, "--config", config, "apps", *argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


async def accepted(router: RegionRouter, key: str) -> list[bool]:
    """Whether each region authenticates ``key``."""
    answers = []
    for region in router.regions:
        async with router.reader(region) as session:
            try:
                await authenticate(session, key)
                answers.append(True)
            except InvalidApiKey:
                answers.append(False)
    return answers


async def actions(router: RegionRouter, region: str) -> list[str]:
    async with router.reader(region) as session:
        return list((await session.execute(
            select(AuditEvent.action).order_by(AuditEvent.seq))).scalars())


async def test_rotation_keeps_the_old_key_for_the_overlap_then_revokes(
    config: str, region_router: RegionRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    app = await cli(capsys, config, "create", "Budgetly", "--redirect-uri", "https://b.test/cb")
    first = app["api_key"]

    rotated = await cli(capsys, config, "rotate-key", app["id"], "--overlap", "1h")
    second = rotated["api_key"]
    assert second != first
    assert await accepted(region_router, first) == [True, True]   # inside the overlap
    assert await accepted(region_router, second) == [True, True]
    shown = await cli(capsys, config, "show", app["id"])
    assert sorted(k["state"] for k in shown["keys"]) == ["active", "expiring"]

    leaked = await cli(capsys, config, "rotate-key", app["id"], "--overlap", "0")
    assert await accepted(region_router, first) == [False, False]
    assert await accepted(region_router, second) == [False, False]
    assert await accepted(region_router, leaked["api_key"]) == [True, True]

    for region in region_router.regions:
        assert await actions(region_router, region) == [
            "application.created", "api_key.rotated", "api_key.rotated"]
        assert (await verify(region_router.engine(region), region)).ok


async def test_revoke_key_and_disable_are_refused_everywhere_and_audited(
    config: str, region_router: RegionRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    one = await cli(capsys, config, "create", "One", "--redirect-uri", "https://one.test/cb")
    two = await cli(capsys, config, "create", "Two", "--redirect-uri", "https://two.test/cb")
    prefix = one["api_key"].split("_")[1]

    revoked = await cli(capsys, config, "revoke-key", prefix)
    assert revoked["id"] == one["id"]
    assert await accepted(region_router, one["api_key"]) == [False, False]
    assert await accepted(region_router, two["api_key"]) == [True, True]

    await cli(capsys, config, "disable", two["id"])
    assert await accepted(region_router, two["api_key"]) == [False, False]
    listed = {a["id"]: a for a in await cli(capsys, config, "list")}
    assert listed[two["id"]]["state"] == "disabled"
    assert [k["state"] for k in listed[one["id"]]["keys"]] == ["revoked"]
    for region in region_router.regions:
        assert (await actions(region_router, region))[-2:] == [
            "api_key.revoked", "application.disabled"]


async def test_update_replaces_redirect_uris_and_refuses_bad_input(
    config: str, region_router: RegionRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    app = await cli(capsys, config, "create", "B", "--redirect-uri", "https://b.test/cb")
    updated = await cli(capsys, config, "update", app["id"], "--name", "B EU",
                        "--redirect-uri", "https://b.test/a", "--redirect-uri", "https://b.test/b")
    assert updated["name"] == "B EU"
    assert updated["redirect_uris"] == ["https://b.test/a", "https://b.test/b"]
    with pytest.raises(ConfigError, match=r"--redirect-uri 'http://b\.test/cb'"):
        await asyncio.to_thread(run, "--config", config, "apps", "update", app["id"],
                                "--redirect-uri", "http://b.test/cb")
    with pytest.raises(ConfigError, match="nothing to change"):
        await asyncio.to_thread(run, "--config", config, "apps", "update", app["id"])
    with pytest.raises(UnknownApplication, match="app_nope"):
        await asyncio.to_thread(run, "--config", config, "apps", "show", "app_nope")
    for region in region_router.regions:
        assert (await actions(region_router, region))[-1] == "application.updated"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_colour_only_on_a_terminal_and_never_with_no_color(
    config: str, region_router: RegionRouter, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await cli(capsys, config, "create", "B", "--redirect-uri", "https://b.test/cb")
    monkeypatch.delenv("NO_COLOR", raising=False)
    for var in ("FORCE_COLOR", "TERM", "COLORTERM"):
        monkeypatch.delenv(var, raising=False)

    def listing(stream: io.StringIO) -> str:
        monkeypatch.setattr("sys.stdout", stream)
        assert run("--config", config, "apps", "list") == 0
        return stream.getvalue()

    piped = await asyncio.to_thread(listing, io.StringIO())
    assert "\x1b[" not in piped
    assert "active" in piped
    coloured = await asyncio.to_thread(listing, _Terminal())
    assert "\x1b[32m" in coloured    # the state column, in green, on a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    plain = await asyncio.to_thread(listing, _Terminal())
    assert "\x1b[32m" not in plain
    assert "active" in plain
