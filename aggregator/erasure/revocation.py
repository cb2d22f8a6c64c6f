"""Step 2: revoking the erased user's grants at their banks (RFC 7009), with retries.

Revocation is best effort by law and by protocol: a bank that cannot be reached must not
hold up the local erasure, which is what the user asked for. Each grant is tried
``revoke_attempts`` times with doubling backoff; the outcome, the attempt count and a
short error code are recorded per grant, and the token stays in escrow
(:mod:`aggregator.erasure.escrow`) so :func:`retry_failed` can try again later — every
retry is counted on the row and appended to the audit trail.

Bank calls happen outside any transaction (no lock is held across the network); each
outcome commits on its own, so a crash mid-step loses at most the grants in flight, which
are retried on resume (revoking twice is harmless: RFC 7009 §2.2 answers 200 for a token
already revoked).

The grants are revoked concurrently, a user's N grants costing about one bank round trip
instead of N, within :class:`RevocationLimits`: at most ``revoke_per_bank`` calls in
flight at one bank and ``revoke_concurrency`` in all, shared by every erasure run of the
process (a bank's rate limit answers a burst with 429, which would only turn into
retries). A slot is held for the bank call alone, not for the backoff between attempts
nor for the commit of the outcome. Every grant's attempt runs to its end even when
another one raises, so each outcome is on its row before the error surfaces; only then
may the job go on to delete and shred (:mod:`aggregator.erasure.job`): no grant's token
is destroyed with the data key before its revocation was tried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import or_, select, update

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.erasure.escrow import open_token
from aggregator.erasure.requests import ErasureConfig
from aggregator.errors import GatewayError
from aggregator.models import ErasureRevocation, RevocationOutcome
from aggregator.models.base import table_of, utcnow
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory
from connectors import BankUnsupported, ConnectorError, PlaidConnector
from vault import Secret

log = logging.getLogger(__name__)
_revocations = table_of(ErasureRevocation)
_REFRESH = "refresh_token"
TokenHint = Literal["access_token", "refresh_token"]
T = TypeVar("T")


class Revoker(Protocol):
    """RFC 7009 revocation at one bank (:class:`connectors.BankOAuthClient` is one)."""

    async def revoke(self, token: str, token_type_hint: TokenHint | None = None) -> None: ...


class Banks(Protocol):
    """What revocation needs of the process's banks (``BankDirectory`` satisfies it)."""

    def oauth(self, bank_id: str) -> Revoker: ...


class PlaidRevoker:
    """A Plaid Item's "revocation": ``/item/remove`` invalidates its access token."""

    def __init__(self, connector: PlaidConnector) -> None:
        self.connector = connector

    async def revoke(self, token: str, token_type_hint: TokenHint | None = None) -> None:
        await self.connector.remove_item(Secret(token))


def revoker_for(banks: Banks, bank_id: str, region: str) -> Revoker:
    """The revoker for one connection's kind: Plaid Items, or the bank's RFC 7009."""
    if isinstance(banks, BankDirectory) and banks.is_plaid(bank_id):
        return PlaidRevoker(banks.plaid(region))
    return banks.oauth(bank_id)


class RevocationLimits:
    """Slots for revocation calls: ``per_bank`` in flight at one bank, ``total`` in all.

    Example::

        limits = RevocationLimits.shared(config)   # one per process (and event loop)
        async with limits.slot("sandbox-eu"):
            await revoker.revoke(token)
    """

    def __init__(self, per_bank: int, total: int) -> None:
        self.per_bank = max(per_bank, 1)
        self.total = max(total, 1)
        self._all = asyncio.Semaphore(self.total)
        self._banks: dict[str, asyncio.Semaphore] = {}

    @classmethod
    def shared(cls, config: ErasureConfig) -> RevocationLimits:
        """The limits every run of this event loop shares for ``config``'s bounds: two
        erasures at once must not each send a bank its own few calls."""
        by_bounds = _SHARED.setdefault(asyncio.get_running_loop(), {})
        bounds = (config.revoke_per_bank, config.revoke_concurrency)
        found = by_bounds.get(bounds)
        if found is None:
            found = by_bounds[bounds] = cls(*bounds)
        return found

    @asynccontextmanager
    async def slot(self, bank_id: str) -> AsyncIterator[None]:
        # The bank's slot first: a call queued behind a busy bank holds no overall slot
        # that a call to an idle bank could use.
        bank = self._banks.setdefault(bank_id, asyncio.Semaphore(self.per_bank))
        async with bank, self._all:
            yield


_SHARED: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[int, int], RevocationLimits]] \
    = WeakKeyDictionary()


async def revoke_pending(
    router: RegionRouter, custody: RegionCustody, banks: Banks, request_id: str,
    config: ErasureConfig,
) -> None:
    """Try every grant of the request not tried yet (``pending``), concurrently within
    :class:`RevocationLimits`; returns once every outcome is committed."""
    limits = RevocationLimits.shared(config)
    rows = await _rows(router, custody.region, request_id, RevocationOutcome.PENDING)
    await _all([_attempt(router, custody, banks, row, config.revoke_attempts,
                         config.revoke_backoff, limits) for row in rows])


async def retry_failed(
    router: RegionRouter, custody: RegionCustody, banks: Banks, request_id: str, *,
    attempts: int = 1, backoff: float = 0.5, actor: str = "worker",
    config: ErasureConfig | None = None,
) -> list[RevocationOutcome]:
    """Retry the request's failed revocations whose token (or consent) is still kept,
    concurrently within the limits of ``config`` (the defaults otherwise).

    Returns the new outcomes, in grant order; each retry is on the row (``attempts``,
    ``last_attempt_at``) and in the audit trail (``erasure.revocation_retried``).
    """
    limits = RevocationLimits.shared(config or ErasureConfig())

    async def retry(row: ErasureRevocation) -> RevocationOutcome:
        outcome = await _attempt(router, custody, banks, row, attempts, backoff, limits)
        async with router.session(custody.region) as session, session.begin():
            await audit.record(session, actor=actor, action="erasure.revocation_retried",
                               target_id=request_id)
        return outcome

    rows = await _rows(router, custody.region, request_id, RevocationOutcome.FAILED)
    return await _all([retry(row) for row in rows
                       if row.token_escrow is not None or row.consent_id is not None])


async def _all(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Await ``calls`` concurrently, each to its end; then raise the first error, if any.

    Not a task group: one grant's database error must not cancel the others' attempts
    halfway (a bank answered, its outcome not yet committed).
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exceptions left among them


async def expire_escrow(router: RegionRouter, region: str, before: datetime) -> int:
    """Give up on failed revocations first tried before ``before``: drop their tokens."""
    async with router.session(region) as session, session.begin():
        result = await session.execute(update(_revocations).where(
            _revocations.c.outcome == RevocationOutcome.FAILED,
            _revocations.c.first_attempt_at < before,
            or_(_revocations.c.token_escrow.is_not(None),
                _revocations.c.consent_id.is_not(None)),
        ).values(token_escrow=None, consent_id=None))
    return int(getattr(result, "rowcount", 0) or 0)


async def _rows(
    router: RegionRouter, region: str, request_id: str, outcome: RevocationOutcome
) -> list[ErasureRevocation]:
    async with router.reader(region) as session:
        return list((await session.execute(
            select(ErasureRevocation).where(
                ErasureRevocation.request_id == request_id, ErasureRevocation.outcome == outcome,
            ).order_by(ErasureRevocation.n)
        )).scalars())


async def _attempt(
    router: RegionRouter, custody: RegionCustody, banks: Banks, row: ErasureRevocation,
    attempts: int, backoff: float, limits: RevocationLimits,
) -> RevocationOutcome:
    if row.token_escrow is None and row.consent_id is None:
        raise RuntimeError(f"erasure {row.request_id}: grant {row.n} has no token in escrow")
    token = None if row.token_escrow is None else open_token(
        custody.hasher, row.request_id, row.n, bytes(row.token_escrow))
    hint: TokenHint = "refresh_token" if row.token_type == _REFRESH else "access_token"
    outcome, error, tried = RevocationOutcome.FAILED, None, 0
    first = row.first_attempt_at or utcnow()
    consent_done = row.consent_id is None
    for attempt in range(max(attempts, 1)):
        tried += 1
        try:
            async with limits.slot(row.bank_id):
                if not consent_done and row.consent_id is not None:
                    await _delete_consent(banks, row.bank_id, row.consent_id)
                    consent_done = True
                if token is not None:
                    await revoker_for(banks, row.bank_id, custody.region).revoke(token, hint)
        except BankUnsupported:
            if row.consent_id is not None and consent_done:
                outcome, error = RevocationOutcome.REVOKED, None  # the DELETE ended it
            else:
                outcome, error = RevocationOutcome.UNSUPPORTED, BankUnsupported.code
            break
        except (ConnectorError, GatewayError) as exc:
            error = exc.code
            log.warning("erasure %s: revoking grant %d at %s failed (%s), attempt %d",
                        row.request_id, row.n, row.bank_id, exc.code, attempt + 1)
            if attempt + 1 < attempts:
                await asyncio.sleep(backoff * 2**attempt)
            continue
        outcome, error = RevocationOutcome.REVOKED, None
        break
    now = utcnow()
    keep = outcome is RevocationOutcome.FAILED  # a later retry needs the token
    async with router.session(custody.region) as session, session.begin():
        await session.execute(update(_revocations).where(
            _revocations.c.request_id == row.request_id, _revocations.c.n == row.n,
        ).values(
            outcome=outcome, attempts=_revocations.c.attempts + tried, last_error=error,
            first_attempt_at=first, last_attempt_at=now,
            revoked_at=now if outcome is RevocationOutcome.REVOKED else None,
            token_escrow=row.token_escrow if keep else None,
            consent_id=row.consent_id if keep else None,
        ))
    return outcome


async def _delete_consent(banks: Banks, bank_id: str, consent_id: str) -> None:
    """DELETE the bank's consent resource (OBIE, Berlin Group: connectors/consents)."""
    if not isinstance(banks, BankDirectory):
        return
    manager = banks.consents(bank_id)
    if manager is not None:
        await manager.revoke(consent_id)
