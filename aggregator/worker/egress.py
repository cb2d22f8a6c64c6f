"""Egress refusals in the worker: our outbound policy refused a bank's URL.

:class:`~connectors.EgressRefused` is the SSRF guard (:mod:`connectors.egress`) refusing
a URL or a resolved address before anything was sent: a bank profile, its discovery
document or a DNS answer points where this deployment may not call. That is
configuration, not an outage, so the worker treats it apart from an unreachable bank:

- the outcome is ``egress_refused`` (the refresh counter's ``outcome`` label, and the
  connection's ``status_reason`` while it stays ``active``), so an operator sees a
  policy problem instead of a flaky bank;
- the credential is retried at the ceiling of the backoff, not on its growing schedule:
  a fixed profile or policy clears it within one ceiling, and until then the bank's
  breaker and error budget are left alone (the bank never saw the request);
- nothing was sent, so nothing can have rotated: the in-flight mark is cleared.

The next successful scheduled sync clears the reason (:func:`clear_refused`, called by
:class:`~aggregator.worker.sync_schedule.SyncSchedule`). Plaid calls do not go through
the egress client, so only bank profiles meet this.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.models import Connection, ConnectionStatus
from aggregator.models.base import utcnow
from aggregator.worker.breaker import Backoff
from aggregator.worker.lease import Lease, release

if TYPE_CHECKING:
    from aggregator.worker.refresh import RefreshContext

log = logging.getLogger(__name__)

#: The outcome label and ``status_reason`` of a refusal by the egress policy.
EGRESS_REFUSED: Final = "egress_refused"


def refused_delay(backoff: Backoff, rng: random.Random) -> float:
    """Seconds until the next try: the backoff's ceiling, jittered over its top half so
    the credentials of one misconfigured bank do not all come back together."""
    return rng.uniform(backoff.cap / 2, backoff.cap)


async def mark_refused(session: AsyncSession, connection_id: str) -> None:
    """Say so on the connection, if it is active (a reason of another status stands)."""
    c = Connection
    await session.execute(update(c).where(
        c.id == connection_id, c.status == ConnectionStatus.ACTIVE,
    ).values(status_reason=EGRESS_REFUSED, updated_at=utcnow()))


async def clear_refused(session: AsyncSession, connection_id: str) -> None:
    """Drop the reason once a call went through (the policy or the profile was fixed)."""
    c = Connection
    await session.execute(update(c).where(
        c.id == connection_id, c.status_reason == EGRESS_REFUSED,
    ).values(status_reason=None, updated_at=utcnow()))


async def refresh_refused(ctx: RefreshContext, region: str, lease: Lease, claimed: int) -> str:
    """Hand a refused refresh's lease back, due at the backoff's ceiling; the outcome."""
    due = utcnow() + timedelta(seconds=refused_delay(ctx.backoff, ctx.rng))
    await asyncio.shield(release(ctx.router, region, lease.credential.id, claimed,
                                 due_at=due, keep_in_flight=False, failed=True))
    async with ctx.router.session(region) as session, session.begin():
        await mark_refused(session, lease.credential.connection_id)
    log.warning("refresh of %s refused by the egress policy (bank %s): check its profile "
                "and [egress]; next try at %s", lease.credential.connection_id,
                lease.bank_id, due.isoformat())
    return EGRESS_REFUSED
