"""What the HTTP API works with, built once per process and shared by every request.

:class:`Services` is the API routes' dataclass of needs: tests build one from their
fixtures, :func:`aggregator.http.app.open_services` (the composer) builds the production
one. Two parts are pluggable for the colleagues who own them:

- :class:`BankClients` hands out the OAuth client of a bank (revocation on
  ``DELETE /v1/connections/{id}``; the Link flow and the sync job use it too);
  the composer makes it an :class:`~aggregator.sync.BankDirectory`;
- :class:`SyncJob` runs one connection's sync (``POST /v1/connections/{id}/sync``);
  the composer installs the Link piece's (:mod:`aggregator.link.wiring`); without one
  the route answers 501.

This module imports no piece (Link, Plaid, console) and not the composer: pieces build
on it, never the other way round (docs/architecture.md, "Composition").

What a part builds lazily into :attr:`Services.extra` (the rate limiter's Redis pool,
say) it registers with :meth:`Services.close_on_exit`; the composer closes those first
on the way out, while the stores they may use are still open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from starlette.requests import Request

from aggregator.custody import RegionCustody
from aggregator.ids import ConnectionId
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from connectors import BankOAuthClient, UserPresence

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncSummary:
    """What one sync run changed; the sync job returns it, the API shows it."""

    accounts: int
    added: int
    modified: int
    removed: int
    outcome: str = "complete"  # or "partial"
    sync_id: str | None = None


class SyncJob(Protocol):
    """Runs one connection's sync now (fetch, upsert, seal, record changes).

    Contract: the connection exists, is ``active`` and belongs to the calling
    application (the route checks all three before calling); ``presence`` says the user
    is at the screen (connectors/consents/base.py ``UserPresence``); raise
    :class:`~connectors.ConnectorError` subclasses for bank trouble (they map to problems)
    and never leave half a sync committed. ``spent_at``: when the caller spent the sync's
    budget units; those of calls that never reached the bank are refunded
    (:func:`aggregator.sync.budget.refund`).
    """

    async def __call__(
        self, connection_id: ConnectionId, *, request_id: str, actor: str,
        presence: UserPresence | None = None, spent_at: datetime | None = None,
    ) -> SyncSummary: ...


class BankClients(Protocol):
    """The OAuth client of each bank profile; one per bank, shared by all requests."""

    def oauth(self, bank_id: str) -> BankOAuthClient: ...


@dataclass
class Services:
    """The shared state of one gateway process."""

    settings: Settings
    router: RegionRouter
    custody: Mapping[str, RegionCustody]
    banks: BankClients
    sync: SyncJob | None = None
    extra: dict[str, object] = field(default_factory=dict)  # for colleagues' seams
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    def close_on_exit(self, close: Callable[[], Awaitable[None]]) -> None:
        """Have :meth:`aclose` await ``close``: for what a part built and owns (a pool,
        a client), whoever built the services cannot know it exists."""
        self._closers.append(close)

    async def aclose(self) -> None:
        """Await every registered close, newest first; one failing does not stop the rest
        (a pool left open leaks sockets until the process ends)."""
        closers, self._closers = self._closers[::-1], []
        for close in closers:
            try:
                await close()
            except Exception:
                log.exception("closing a service failed at shutdown")


def services_of(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError("the app has no services: pass them to create_app or use lifespan")
    return services
