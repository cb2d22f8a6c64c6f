"""`aggregator apps update --brand-*`: the Link page's branding, checked before writing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aggregator.errors import ConfigError
from aggregator.models import Application
from aggregator.store import RegionRouter
from tests.aggregator.commands.test_apps import run
from tests.aggregator.commands.test_apps_lifecycle import actions, cli
from tests.aggregator.link.test_page_i18n_brand import png


async def test_brand_is_stored_in_every_region_and_audited(
    config: str, region_router: RegionRouter, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    app = await cli(capsys, config, "create", "Budgetly", "--redirect-uri", "https://b.test/cb")
    logo = tmp_path / "logo.png"
    logo.write_bytes(png())
    shown = await cli(capsys, config, "update", app["id"], "--brand-name", "Budgetly Pro",
                      "--brand-accent", "#7A1FA2", "--brand-logo", str(logo))
    assert shown["brand"] == {"name": "Budgetly Pro", "accent": "#7a1fa2", "logo": True}
    for region in region_router.regions:
        async with region_router.reader(region) as session:
            row = await session.get(Application, app["id"])
        assert row is not None
        assert row.brand_logo is not None
        assert row.brand_logo.startswith("data:image/png;base64,")
        assert (await actions(region_router, region))[-1] == "application.updated"
    cleared = await cli(capsys, config, "update", app["id"], "--brand-logo", "")
    assert cleared["brand"]["logo"] is False


@pytest.mark.parametrize(("option", "value", "named"), [
    ("--brand-accent", "#ffeb3b", "brand-accent"),   # yellow: 1.2:1 with white text
    ("--brand-accent", "blue", "brand-accent"),
    ("--brand-name", " ", "brand-name"),
])
async def test_an_unreadable_brand_is_refused_naming_the_option(
    config: str, region_router: RegionRouter, capsys: pytest.CaptureFixture[str],
    option: str, value: str, named: str,
) -> None:
    app = await cli(capsys, config, "create", "Budgetly", "--redirect-uri", "https://b.test/cb")
    with pytest.raises(ConfigError, match=f"--{named}"):
        await asyncio.to_thread(run, "--config", config, "apps", "update", app["id"],
                                option, value)
    async with region_router.reader(region_router.regions[0]) as session:
        row = await session.get(Application, app["id"])
    assert row is not None
    assert row.brand_accent is None
    assert row.brand_name is None


async def test_an_svg_logo_is_refused(config: str, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    app = await cli(capsys, config, "create", "Budgetly", "--redirect-uri", "https://b.test/cb")
    svg = tmp_path / "logo.svg"
    svg.write_text("<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>")
    with pytest.raises(ConfigError, match="--brand-logo"):
        await asyncio.to_thread(run, "--config", config, "apps", "update", app["id"],
                                "--brand-logo", str(svg))
