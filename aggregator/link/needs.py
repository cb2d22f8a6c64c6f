"""What the Link piece needs from the process that serves it, and nothing more.

The Link flow does not import the composer (:mod:`aggregator.http.app`): it names what
it uses as a Protocol, and the composer hands over its services, which satisfy it
(docs/architecture.md, "Composition"). ``banks`` must be a
:class:`~aggregator.sync.BankDirectory` (:func:`aggregator.link.wiring.install` checks);
``sync`` is the process's sync job, which ``install`` fills when nobody else did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aggregator.custody import RegionCustody
from aggregator.store import RegionRouter


class LinkNeeds(Protocol):
    """The shared state of a gateway process, as the Link flow uses it.

    Example: :class:`aggregator.http.Services` satisfies it, so does any object with
    these attributes (a test's or a front end's of its own).
    """

    sync: Any
    """Runs one connection's sync, or ``None`` until :func:`~aggregator.link.wiring.install`."""

    @property
    def router(self) -> RegionRouter: ...
    @property
    def custody(self) -> Mapping[str, RegionCustody]: ...
    @property
    def banks(self) -> Any: ...
    @property
    def extra(self) -> dict[str, object]: ...
