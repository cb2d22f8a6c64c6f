"""The worker's outbox pass: deliver due outbound events (issue 6, "Outbound events").

THE SINGLE CALL SITE for the colleague's ``deliver_due`` (``aggregator/events/``). When
this was written that package was still being built (``aggregator/events/delivery.py``
present, no ``__init__.py``), so it is looked up at start-up rather than imported:
:func:`outbox_job` returns None, and the worker runs without an outbox pass, while the
function is missing. The call below follows the signature found then —
``deliver_due(router, http, custody, *, owner, limit) -> DeliveryStats`` — and is the
only line to adapt if it changes.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from aggregator.custody import RegionCustody
from aggregator.store import RegionRouter
from connectors import EgressPolicy

log = logging.getLogger(__name__)

Deliver = Callable[..., Awaitable[Any]]
_MODULES = ("aggregator.events", "aggregator.events.delivery")


@dataclass
class OutboxSweep:
    """:class:`~aggregator.worker.jobs.PeriodicJob` delivering due outbox events."""

    router: RegionRouter
    http: httpx.AsyncClient
    custody: Mapping[str, RegionCustody]
    owner: str
    deliver_due: Deliver
    batch: int = 32
    interval: float = 1.0
    name: str = "outbox"
    #: The outbound policy each delivery's URL is checked against (``settings.egress``).
    policy: EgressPolicy = field(default_factory=EgressPolicy)

    async def run_once(self, stop: asyncio.Event) -> int:
        if stop.is_set():
            return 0
        # OUTBOX CALL SITE: the one call into aggregator.events.
        stats = await self.deliver_due(self.router, self.http, self.custody, owner=self.owner,
                                       limit=self.batch, policy=self.policy)
        return int(getattr(stats, "delivered", 0))


def find_deliver_due() -> Deliver | None:
    """``deliver_due`` from ``aggregator.events`` if that package provides it yet."""
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found = getattr(module, "deliver_due", None)
        if callable(found):
            return found  # type: ignore[no-any-return]
    return None


def outbox_job(
    router: RegionRouter, http: httpx.AsyncClient, custody: Mapping[str, RegionCustody], *,
    owner: str, batch: int, policy: EgressPolicy | None = None,
) -> OutboxSweep | None:
    """The outbox pass if ``deliver_due`` exists, else None (logged)."""
    deliver = find_deliver_due()
    if deliver is None:
        log.warning("worker: aggregator.events.deliver_due not found; no outbox delivery pass")
        return None
    return OutboxSweep(router, http, custody, f"outbox:{owner}"[:64], deliver, batch=batch,
                       policy=policy or EgressPolicy())
