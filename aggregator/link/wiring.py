"""How the Link flow and the sync job plug into a process's shared state.

The Link piece names what it needs (:class:`~aggregator.link.needs.LinkNeeds`): the
process's ``banks`` (a :class:`~aggregator.sync.BankDirectory`, which also builds API
dialects and filters banks by region), its ``sync`` seam and its ``extra`` slots.
:func:`install` fills ``sync`` with :class:`~aggregator.sync.Syncer` and keeps the Link
flow in ``extra``; the Link routes find it through :func:`components`.

The composer (:func:`aggregator.http.app.open_services`) calls :func:`install` itself
(with ``settings.public_url``); whoever builds :class:`~aggregator.http.Services` by
hand, as the tests and ``aggregator demo`` do, calls it. Example::

    services = Services(settings, router, custody, BankDirectory(profiles, http))
    install(services, public_url="https://gateway.example")
    app = create_app(settings, services=services)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aggregator.bankhealth import recorder_in
from aggregator.http.services import SyncSummary
from aggregator.ids import ConnectionId
from aggregator.link.flow import LinkFlow
from aggregator.link.needs import LinkNeeds
from aggregator.sync import BankDirectory, Syncer
from connectors import UserPresence

_KEY = "aggregator.link"


class SyncJobAdapter:
    """:class:`~aggregator.http.SyncJob` backed by :class:`~aggregator.sync.Syncer`."""

    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer

    async def __call__(
        self, connection_id: ConnectionId, *, request_id: str, actor: str,
        presence: UserPresence | None = None, spent_at: datetime | None = None,
    ) -> SyncSummary:
        result = await self.syncer.sync(connection_id, actor=actor, request_id=request_id,
                                        presence=presence, spent_at=spent_at)
        c = result.counts
        return SyncSummary(c.accounts, c.added, c.modified, c.removed, result.outcome,
                           result.run_id)


@dataclass(frozen=True, slots=True)
class LinkComponents:
    """What the Link routes use; ``public_url`` is the gateway's external base URL."""

    banks: BankDirectory
    syncer: Syncer
    flow: LinkFlow
    public_url: str | None


def install(services: LinkNeeds, *, public_url: str | None = None) -> LinkComponents:
    """Give ``services`` the bank directory, the sync job and the Link flow.

    ``public_url`` (``https://gateway.example``) is where browsers and banks reach the
    gateway; without it the Link routes use the base URL of each request, which is
    fine on loopback and wrong behind a proxy that rewrites ``Host``.
    """
    banks = services.banks
    if not isinstance(banks, BankDirectory):
        raise TypeError(
            "the Link flow needs services.banks to be an aggregator.sync.BankDirectory"
        )
    # The gateway's syncs are tallied like the worker's; the app's lifespan flushes the
    # recorder at shutdown (docs/architecture.md, "Bank health").
    syncer = Syncer(services.router, services.custody, banks,
                    recorder_in(services.extra, services.router))
    if services.sync is None:
        services.sync = SyncJobAdapter(syncer)
    found = LinkComponents(
        banks, syncer, LinkFlow(services.router, services.custody, banks, syncer),
        public_url.rstrip("/") if public_url else None,
    )
    services.extra[_KEY] = found
    return found


def components(services: LinkNeeds) -> LinkComponents:
    """The components :func:`install` put on ``services`` (installing them if needed)."""
    found = services.extra.get(_KEY)
    if isinstance(found, LinkComponents):
        return found
    return install(services)
