"""What the HTTP layer works with, built once per process and shared by every request.

:class:`Services` is the seam between the web layer and everything else: tests build
one from their fixtures, :func:`open_services` builds the production one (and refuses
to start on anything wrong: a database behind the migration head, a missing KEK, a bad
bank profile or missing bank credentials). Two parts are pluggable for the colleagues
who own them:

- :class:`BankClients` hands out the OAuth client of a bank (revocation on
  ``DELETE /v1/connections/{id}``; the Link flow and the sync job use it too);
  :func:`open_services` makes it an :class:`~aggregator.sync.BankDirectory`;
- :class:`SyncJob` runs one connection's sync (``POST /v1/connections/{id}/sync``);
  :func:`open_services` installs :mod:`aggregator.link.wiring`'s; without one the
  route answers 501.

What a part builds lazily into :attr:`Services.extra` (the rate limiter's Redis pool,
say) it registers with :meth:`Services.close_on_exit`; :func:`open_services` closes
those first on the way out, while the stores they may use are still open.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import httpx
from starlette.requests import Request

from aggregator.bank_profiles import gateway_profiles
from aggregator.custody import RegionCustody, open_custody
from aggregator.ids import ConnectionId
from aggregator.settings import Settings
from aggregator.store import RegionRouter, require_head
from aggregator.sync import BankDirectory
from connectors import (
    BankOAuthClient,
    BankProfile,
    UserPresence,
    bank_ssl_context,
    egress_client,
    load_client_credentials,
)

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


def check_profiles(settings: Settings) -> dict[str, BankProfile]:
    """Load every bank profile and the credentials of those in a served region.

    A typo in a profile, a missing client secret or an unreadable (or group-readable)
    transport certificate key stops start-up here instead of failing the first user who
    picks that bank.
    """
    profiles = gateway_profiles(settings)
    for profile in profiles.values():
        if profile.region in settings.regions:
            load_client_credentials(profile)
            bank_ssl_context(profile)
            for url in (profile.issuer, profile.api.base_url):
                problem = settings.egress.url_problem(url)
                if problem:  # the built-in loopback sandboxes, in production
                    log.warning("bank %s is unreachable under the egress policy: %s",
                                profile.id, problem)
                    break
    return profiles


#: Builds the process's :class:`BankClients` from the loaded profiles and the shared client.
BankClientsFactory = Callable[[Mapping[str, BankProfile], httpx.AsyncClient], BankClients]


@asynccontextmanager
async def open_services(
    settings: Settings, *, http: httpx.AsyncClient | None = None,
    bank_clients: BankClientsFactory | None = None,
) -> AsyncIterator[Services]:
    """Everything a gateway process needs, checked; closed again on exit.

    Outbound calls go through one :func:`connectors.egress_client` built with
    ``settings.egress`` (the SSRF guard), unless a test passes its own ``http``; a bank
    with a transport certificate gets its own client from the directory.

    With the default ``bank_clients`` the Link flow and the sync job are installed
    too (:func:`aggregator.link.wiring.install`, with ``settings.public_url``), so
    ``create_app(settings)`` alone serves working Link pages. Another
    :class:`BankClients` implementation (a test double) gets neither.
    """
    profiles = check_profiles(settings)
    async with AsyncExitStack() as stack:
        router = RegionRouter(settings)
        stack.push_async_callback(router.dispose)
        for region in router.regions:
            await require_head(router.engine(region), region)
        custody = await open_custody(router, settings)
        for keys in custody.values():
            stack.callback(keys.close)
        if http is None:
            http = await stack.enter_async_context(egress_client(settings.egress))
        if bank_clients is None:
            directory = BankDirectory(profiles, http, policy=settings.egress)
            stack.push_async_callback(directory.aclose)
            banks: BankClients = directory
        else:
            banks = bank_clients(profiles, http)
        services = Services(settings, router, custody, banks)
        stack.push_async_callback(services.aclose)  # before the router and clients close
        if isinstance(services.banks, BankDirectory):
            # Imported here: the Link layer builds on this module (it needs Services).
            from aggregator.link.wiring import install
            from aggregator.plaid.wiring import install_plaid_webhooks

            install(services, public_url=settings.public_url)
            install_plaid_webhooks(services)
        yield services
