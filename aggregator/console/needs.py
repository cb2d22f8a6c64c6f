"""What the console needs from the process that serves it, and nothing more.

The console does not import the HTTP API's composition (``aggregator.http``): it names
what it uses as a Protocol, and the app builder, which imports the console, hands over
its services (``app.state.services``) that happen to satisfy it. Composition stays
one-directional: ``aggregator.http`` → ``aggregator.console``, never back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from starlette.requests import Request

from aggregator.custody import RegionCustody
from aggregator.settings import Settings
from aggregator.store import RegionRouter


class ConsoleNeeds(Protocol):
    """The shared state of a gateway process, as the console reads it.

    ``banks`` is the process's bank directory (profiles, OAuth clients for revocation);
    ``sync`` runs one connection's sync (``None``: the deployment has none configured).
    """

    @property
    def settings(self) -> Settings: ...
    @property
    def router(self) -> RegionRouter: ...
    @property
    def custody(self) -> Mapping[str, RegionCustody]: ...
    @property
    def banks(self) -> Any: ...
    @property
    def sync(self) -> Any: ...


def needs_of(request: Request) -> ConsoleNeeds:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise RuntimeError("the app has no services: the console cannot run without them")
    needs: ConsoleNeeds = services
    return needs
