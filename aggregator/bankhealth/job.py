"""The worker's bank-health job: flush the tallies, renew breaker heartbeats, prune.

Breakers live in each worker process (:mod:`aggregator.worker.breaker`); every pass
publishes this process's breaker of each bank to the regions that bank serves, with the
time this process first saw it in its current state. A stopping worker withdraws its
rows; one that dies leaves rows that readers ignore once they are older than
:data:`aggregator.bankhealth.STALE` and that :func:`~aggregator.bankhealth.store.prune`
deletes after a day.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from aggregator.bankhealth.recorder import CallRecorder
from aggregator.bankhealth.store import prune, publish_breakers, withdraw_breakers
from aggregator.models.base import utcnow

log = logging.getLogger(__name__)

#: Seconds between prunes of one process (each prune is one DELETE per table).
PRUNE_EVERY = 3600.0


@dataclass
class BankHealthJob:
    """:class:`~aggregator.worker.jobs.PeriodicJob`; ``states`` returns bank -> breaker
    state name (``closed``, ``half_open``, ``open``) and ``regions_of`` the regions a
    bank serves."""

    recorder: CallRecorder
    process_id: str
    states: Callable[[], Mapping[str, str]]
    regions_of: Callable[[str], list[str]]
    interval: float = 10.0
    name: str = "bank_health"
    _seen: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    _pruned_at: float = field(default=-PRUNE_EVERY)

    async def run_once(self, stop: asyncio.Event) -> int:
        written = await self.recorder.flush()
        await self.heartbeat()
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = time.monotonic()
            for region in self.recorder.router.regions:
                try:
                    await prune(self.recorder.router, region)
                except Exception:
                    log.warning("bank health: pruning region %s failed", region,
                                exc_info=True)
        return written

    async def heartbeat(self) -> None:
        now = utcnow()
        by_region: dict[str, dict[str, tuple[str, datetime]]] = {}
        for bank, state in self.states().items():
            seen = self._seen.get(bank)
            if seen is None or seen[0] != state:
                seen = self._seen[bank] = (state, now)
            for region in self.regions_of(bank):
                by_region.setdefault(region, {})[bank] = seen
        for region, states in sorted(by_region.items()):
            try:
                await publish_breakers(self.recorder.router, region, self.process_id,
                                       states, now)
            except Exception:
                log.warning("bank health: heartbeat to region %s failed", region,
                            exc_info=True)

    async def close(self) -> None:
        """At shutdown: the last flush, and this process's heartbeats withdrawn."""
        await self.recorder.aclose()
        for region in self.recorder.router.regions:
            try:
                await withdraw_breakers(self.recorder.router, region, self.process_id)
            except Exception:
                log.warning("bank health: withdrawing heartbeats from %s failed", region,
                            exc_info=True)
