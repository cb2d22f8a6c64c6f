"""A bank that refuses our configuration is not an outage: each party hears it differently.

When a bank answers ``invalid_client``, ``unauthorized_client``, ``invalid_scope``, an
unknown redirect URI, or requires PAR that the profile turns off
(:class:`~connectors.BankMisconfigured`), waiting will not help and the user cannot fix
it. So:

- the user sees "this bank can't be linked right now" (:class:`BankNotLinkable`), in the
  page's language, not "your bank is not reachable";
- the application gets ``link.failed`` with the reason code (``par_required``…);
- the operator gets an error log line and ``aggregator_bank_misconfigured_total`` naming
  the bank profile and the setting to look at.
"""

from __future__ import annotations

import logging
from typing import ClassVar
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.events.outbox import emit
from aggregator.link.errors import LinkError
from aggregator.models import LinkSession
from connectors import BankMisconfigured

log = logging.getLogger(__name__)


class BankNotLinkable(LinkError):
    """Raised when the chosen bank refuses our configuration: nothing the user can do."""

    code = "bank_misconfigured"
    status = 502
    title = "This bank can't be linked right now"
    #: The page's text; it and ``title`` are msgids of the Link catalogues (de, fr, es).
    message = ("This bank cannot be linked through this app at the moment. "
               "Nothing is wrong with your account.")

    def __init__(self, cause: BankMisconfigured, bank_id: str) -> None:
        super().__init__(self.message)
        self.cause = cause
        self.bank_id = bank_id


class MisconfigurationMetrics:
    """``aggregator_bank_misconfigured_total{bank,setting,reason}``, one per registry."""

    _by_registry: ClassVar[WeakKeyDictionary[CollectorRegistry, MisconfigurationMetrics]] = (
        WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "aggregator_bank_misconfigured", "Bank answers refusing our configuration, by "
            "bank profile, profile setting to check and reason code.",
            ["bank", "setting", "reason"], registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> MisconfigurationMetrics:
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found


def report(exc: BankMisconfigured, bank_id: str) -> None:
    """The operator's log line, naming the profile and the setting."""
    log.error("bank %s refuses our configuration (%s): check the profile setting %r",
              bank_id, exc.reason, exc.setting)


def count(exc: BankMisconfigured, bank_id: str, registry: CollectorRegistry) -> None:
    """The operator's metric (the HTTP layer holds the registry)."""
    MisconfigurationMetrics.of(registry).refused.labels(bank_id, exc.setting, exc.reason).inc()


async def link_failed(session: AsyncSession, link: LinkSession, reason: str) -> None:
    """The application's side: ``link.failed`` with a reason code, in the caller's
    transaction (the one that marks the session failed)."""
    await emit(session, link.application_id, "link.failed", {
        "link_session_id": link.id, "user_id": link.user_id, "bank_id": link.bank_id,
        "reason": reason[:64],
    })
