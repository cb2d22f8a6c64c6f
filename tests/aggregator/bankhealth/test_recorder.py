"""The call recorder: tallies in memory, one write per region and flush, durable figures.

Runs on SQLite and PostgreSQL (the ``backend`` fixture). Writes are counted on the real
engine with a ``before_cursor_execute`` listener, so "N calls, one write" is what the
database saw, not what the recorder says about itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, func, select

from aggregator.bankhealth import CallRecorder
from aggregator.bankhealth.reads import last_hour, refresh_history
from aggregator.models import BankCallMinute, RefreshAttempt
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from tests.aggregator._factories import LinkFactory
from tests.aggregator.conftest import Backend
from tests.aggregator.console.conftest import region_down


@contextmanager
def statements(router: RegionRouter, region: str, table: str) -> Iterator[list[str]]:
    """Every INSERT into ``table`` the region's engine sends, while the block runs."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT") and table in statement:
            seen.append(statement)

    engine = router.engine(region).sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def _calls(router: RegionRouter, region: str) -> dict[tuple[str, str, str], int]:
    m = BankCallMinute
    async with router.reader(region) as session:
        rows = await session.execute(
            select(m.bank_id, m.operation, m.outcome, func.sum(m.calls))
            .group_by(m.bank_id, m.operation, m.outcome))
        return {(b, o, out): int(n) for b, o, out, n in rows}


async def test_many_calls_are_written_by_one_statement_in_one_flush(
    region_router: RegionRouter,
) -> None:
    recorder = CallRecorder(region_router, interval=3600)
    at = utcnow()
    for i in range(500):
        recorder.call("eu", "sandbox", "refresh", "ok" if i % 5 else "unavailable",
                      0.05 + (i % 7) / 10, at=at)
    for _ in range(40):
        recorder.call("eu", "sandbox", "sync", "complete", 1.2, at=at)
    with statements(region_router, "eu", "bank_call_minutes") as seen:
        assert seen == []  # nothing written while calls were tallied
        await recorder.flush()
    assert len(seen) == 1
    assert recorder.writes == 1
    assert await _calls(region_router, "eu") == {
        ("sandbox", "refresh", "ok"): 400, ("sandbox", "refresh", "unavailable"): 100,
        ("sandbox", "sync", "complete"): 40}
    assert await _calls(region_router, "us") == {}  # each region's calls stay home


async def test_flushes_add_to_the_stored_minute(region_router: RegionRouter) -> None:
    at = utcnow()
    first, second = CallRecorder(region_router), CallRecorder(region_router)
    first.call("eu", "sandbox", "refresh", "ok", 0.2, at=at)
    second.call("eu", "sandbox", "refresh", "ok", 3.0, at=at)
    await first.flush()
    await second.flush()
    async with region_router.reader("eu") as session:
        figures = (await last_hour(session, at + timedelta(seconds=1)))["sandbox"]["refresh"]
    assert figures.calls == 2
    assert figures.seconds == 3.2
    assert figures.p95 == 5.0  # the second call's bucket: (2.5 s, 5 s]
    assert figures.error_rate == 0.0


_CHILD = """
import asyncio, sys
from pathlib import Path
from aggregator.bankhealth import CallRecorder
from aggregator.settings import RegionSettings, Settings
from aggregator.store import RegionRouter
from vault import LocalKeyringConfig

async def main(url: str, calls: int) -> None:
    settings = Settings(data_dir=Path("."), regions={
        "eu": RegionSettings("eu", url, LocalKeyringConfig(Path("keys"), "eu"))})
    router = RegionRouter(settings)
    recorder = CallRecorder(router, interval=3600)
    for _ in range(calls):
        recorder.call("eu", "sandbox", "sync", "complete", 0.3)
    await recorder.aclose()  # what a process does when it stops
    await router.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_figures_survive_a_process_restart(
    region_router: RegionRouter, backend: Backend, tmp_path: Any,
) -> None:
    for calls in (7, 5):  # one process, then its successor
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, backend.urls["eu"], str(calls), cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(child.communicate(), 120)
        assert child.returncode == 0, err.decode()[-2000:]
    assert await _calls(region_router, "eu") == {("sandbox", "sync", "complete"): 12}


async def test_memory_is_bounded_and_a_failed_flush_keeps_its_batch(
    region_router: RegionRouter,
) -> None:
    recorder = CallRecorder(region_router, interval=3600, max_keys=2, max_attempts=1)
    at = utcnow()
    for outcome in ("ok", "unavailable", "protocol_error"):
        recorder.call("eu", "sandbox", "refresh", outcome, 0.1, at=at)
    for _ in range(2):
        recorder.attempt("eu", connection_id="con_eu_" + "a" * 26, user_id="usr_eu_" + "a" * 26,
                         bank_id="sandbox", outcome="ok", error_code=None, worker="w")
    assert recorder.waiting == 3  # two tallies, one attempt
    assert recorder.dropped == 2

    with region_down(region_router, "eu"):
        assert await recorder.flush() == 0
    assert recorder.waiting == 3  # kept for the next flush
    await recorder.flush()
    assert await _calls(region_router, "eu") == {("sandbox", "refresh", "ok"): 1,
                                                 ("sandbox", "refresh", "unavailable"): 1}
    async with region_router.reader("eu") as session:
        # The attempt named no existing connection: an erased one leaves no history.
        assert await session.scalar(select(func.count()).select_from(RefreshAttempt)) == 0


async def test_attempts_of_live_connections_are_kept_newest_first(
    region_router: RegionRouter, make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    recorder = CallRecorder(region_router)
    now = utcnow()
    for i, (outcome, code) in enumerate((("unavailable", "bank_unavailable"), ("ok", None))):
        recorder.attempt("eu", connection_id=linked.connection.id, user_id=linked.user.id,
                         bank_id="sandbox", outcome=outcome, error_code=code,
                         worker="host:42", at=now + timedelta(seconds=i))
    await recorder.flush()
    async with region_router.reader("eu") as session:
        history = await refresh_history(session, linked.connection.id)
    assert [(a.outcome, a.error_code, a.worker) for a in history] == [
        ("ok", None, "host:42"), ("unavailable", "bank_unavailable", "host:42")]
