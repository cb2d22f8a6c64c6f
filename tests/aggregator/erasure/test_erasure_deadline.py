"""The statutory deadline: configured (``[erasure] deadline_days``), stamped on each new
request, and counted by the overdue metric once passed."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aggregator.custody import RegionCustody
from aggregator.erasure import ErasureConfig, ErasureMetrics, request_erasure
from aggregator.errors import ConfigError
from aggregator.http.routes.erasure import erasure_config
from aggregator.http.services import Services
from aggregator.ids import ApplicationId
from aggregator.models import ErasureState
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter
from tests.aggregator._factories import LinkFactory
from tests.aggregator.erasure.conftest import FakeBanks, JobFactory


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aggregator.toml"
    path.write_text(text)
    return path


def test_deadline_days_comes_from_the_file_and_the_environment_wins(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).erasure_deadline_days == 30
    path = _toml(tmp_path, "[erasure]\ndeadline_days = 45\n")
    assert load_settings(path, environ={}).erasure_deadline_days == 45
    env = {"AGGREGATOR_ERASURE_DEADLINE_DAYS": "14"}
    assert load_settings(path, environ=env).erasure_deadline_days == 14
    assert ErasureConfig.from_settings(load_settings(path, environ=env)).deadline == timedelta(
        days=14)


@pytest.mark.parametrize(("text", "env", "named"), [
    ("[erasure]\ndeadline_days = 0\n", {}, "erasure.deadline_days"),
    ("[erasure]\ndeadline_days = 2.5\n", {}, "erasure.deadline_days"),
    ('[erasure]\ndeadline_days = "30"\n', {}, "erasure.deadline_days"),
    ("[erasure]\ndeadline = 30\n", {}, "erasure.deadline"),
    ("", {"AGGREGATOR_ERASURE_DEADLINE_DAYS": "a month"}, "AGGREGATOR_ERASURE_DEADLINE_DAYS"),
])
def test_a_bad_deadline_fails_at_start_up_naming_the_setting(
    tmp_path: Path, text: str, env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(_toml(tmp_path, text), environ=env)


async def test_a_request_gets_the_configured_deadline_through_the_api_seam(
    region_router: RegionRouter, custody: dict[str, RegionCustody], settings: Settings,
    app_id: ApplicationId, make_linked: LinkFactory, fake_banks: FakeBanks,
) -> None:
    configured = dataclasses.replace(settings, erasure_deadline_days=45)
    services = Services(configured, region_router, custody, fake_banks)  # type: ignore[arg-type]
    linked = await make_linked("eu")
    request = await request_erasure(region_router, custody["eu"], linked.user.id, app_id,
                                    config=erasure_config(services), actor=app_id)
    assert request is not None
    assert request.deadline_at - request.requested_at == timedelta(days=45)


async def test_the_overdue_gauge_counts_open_requests_past_their_deadline(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory,
) -> None:
    short = ErasureConfig(deadline=timedelta(days=1))
    ids = []
    for config in (short, short, ErasureConfig()):
        linked = await make_linked("eu")
        request = await request_erasure(region_router, custody["eu"], linked.user.id, app_id,
                                        config=config, actor=app_id)
        assert request is not None
        ids.append(request)
    assert await make_job().run(ids[0].id) is ErasureState.COMPLETED  # done in time
    registry = CollectorRegistry()
    metrics = ErasureMetrics(registry)

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(f"aggregator_erasure_requests_{name}", {"region": "eu"})

    await metrics.refresh(region_router, ids[1].requested_at + timedelta(hours=23))
    assert (gauge("open"), gauge("overdue")) == (2.0, 0.0)
    await metrics.refresh(region_router, ids[1].requested_at + timedelta(days=2))
    assert (gauge("open"), gauge("overdue")) == (2.0, 1.0)  # the other one has 30 days
    assert registry.get_sample_value("aggregator_erasure_requests_overdue",
                                     {"region": "us"}) == 0.0
