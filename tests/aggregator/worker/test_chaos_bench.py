"""bench/chaos_bench.py in a short, bounded CI mode: workers killed with SIGKILL while
refreshing against a strict rotating bank lose no grant without flagging it, and leave no
lease or in-flight mark behind."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from aggregator.custody import RegionCustody
from aggregator.ids import ApplicationId
from aggregator.settings import Settings
from aggregator.store import RegionRouter

BENCH = Path(__file__).resolve().parents[3] / "bench" / "chaos_bench.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("chaos_bench", module)
    spec.loader.exec_module(module)
    return module


async def test_kills_lose_no_grant_unflagged_and_leave_no_lease(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    settings: Settings, tmp_path: Path,
) -> None:
    bench = _bench()
    result = await bench.run_chaos(
        region_router, custody["eu"], app_id, settings, tmp_path, workers=2, rate=20.0,
        ttl=3, duration=8.0, kill_every=2.5, concurrency=4, lease_seconds=2.0,
    )
    print(bench.report(result))
    assert result.kills >= 2
    assert result.refreshes > 0  # the workers did refresh between the kills
    assert result.window_count > 0
    assert result.unflagged == 0  # every lost grant is flagged reauth_required
    assert result.leases_left == 0
    assert result.lost <= result.credentials
