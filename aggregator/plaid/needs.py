"""What the Plaid piece needs from the process that serves it, and where it keeps its part.

The Plaid receiver and ``POST /v1/plaid/exchange`` do not import the composer
(:mod:`aggregator.http.app`): they name what they use as a Protocol, and the composer
hands over its services, which satisfy it (docs/architecture.md, "Composition").
``banks`` must be a :class:`~aggregator.sync.BankDirectory` for Plaid to attach;
:func:`aggregator.plaid.wiring.install_plaid_webhooks` keeps the receiver in ``extra``
under :data:`SERVICE_KEY`, where the webhook route finds it.
"""

from __future__ import annotations

from typing import Any, Protocol

from aggregator.settings import Settings
from aggregator.store import RegionRouter

SERVICE_KEY = "plaid_webhooks"  # the extra slot of the PlaidWebhooks receiver


class PlaidNeeds(Protocol):
    """The shared state of a gateway process, as the Plaid piece uses it.

    Example: :class:`aggregator.http.Services` satisfies it.
    """

    @property
    def settings(self) -> Settings: ...
    @property
    def router(self) -> RegionRouter: ...
    @property
    def banks(self) -> Any: ...
    @property
    def extra(self) -> dict[str, object]: ...
