"""Step 2: revoking the erased user's grants at their banks (RFC 7009), with retries.

Revocation is best effort by law and by protocol: a bank that cannot be reached must not
hold up the local erasure, which is what the user asked for. Each grant is tried
``revoke_attempts`` times with doubling backoff; the outcome, the attempt count and a
short error code are recorded per grant, and the token stays in escrow
(:mod:`aggregator.erasure.escrow`) so :func:`retry_failed` can try again later — every
retry is counted on the row and appended to the audit trail.

Bank calls happen outside any transaction (no lock is held across the network); each
outcome commits on its own, so a crash mid-step loses at most the grant in flight, which
is retried on resume (revoking twice is harmless: RFC 7009 §2.2 answers 200 for a token
already revoked).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Literal, Protocol

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
from connectors import BankUnsupported, ConnectorError, GrantRevoked, PlaidConnector
from vault import Secret

log = logging.getLogger(__name__)
_revocations = table_of(ErasureRevocation)
_REFRESH = "refresh_token"
TokenHint = Literal["access_token", "refresh_token"]


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


async def revoker_for(banks: Banks, bank_id: str, region: str,
                      client_id: str | None = None) -> Revoker:
    """The revoker for one connection's kind: Plaid Items, or the bank's RFC 7009 with
    the client that holds the grant (an application's own, aggregator/registrations.py)."""
    if isinstance(banks, BankDirectory) and banks.is_plaid(bank_id):
        return PlaidRevoker(banks.plaid(region))
    if client_id is not None and isinstance(banks, BankDirectory):
        return await banks.client(bank_id, client_id, region)
    return banks.oauth(bank_id)


async def revoke_pending(
    router: RegionRouter, custody: RegionCustody, banks: Banks, request_id: str,
    config: ErasureConfig,
) -> None:
    """Try every grant of the request not tried yet (``pending``)."""
    for row in await _rows(router, custody.region, request_id, RevocationOutcome.PENDING):
        await _attempt(router, custody, banks, row, config.revoke_attempts,
                       config.revoke_backoff)


async def retry_failed(
    router: RegionRouter, custody: RegionCustody, banks: Banks, request_id: str, *,
    attempts: int = 1, backoff: float = 0.5, actor: str = "worker",
) -> list[RevocationOutcome]:
    """Retry the request's failed revocations whose token (or consent) is still kept.

    Returns the new outcomes; each retry is on the row (``attempts``,
    ``last_attempt_at``) and in the audit trail (``erasure.revocation_retried``).
    """
    out = []
    rows = await _rows(router, custody.region, request_id, RevocationOutcome.FAILED)
    for row in rows:
        if row.token_escrow is None and row.consent_id is None:
            continue
        outcome = await _attempt(router, custody, banks, row, attempts, backoff)
        async with router.session(custody.region) as session, session.begin():
            await audit.record(session, actor=actor, action="erasure.revocation_retried",
                               target_id=request_id)
        out.append(outcome)
    return out


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
    attempts: int, backoff: float,
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
            if not consent_done and row.consent_id is not None:
                await _delete_consent(banks, row.bank_id, row.consent_id)
                consent_done = True
            if token is not None:
                revoker = await revoker_for(banks, row.bank_id, custody.region,
                                            row.bank_client_id)
                await revoker.revoke(token, hint)
        except BankUnsupported:
            if row.consent_id is not None and consent_done:
                outcome, error = RevocationOutcome.REVOKED, None  # the DELETE ended it
            else:
                outcome, error = RevocationOutcome.UNSUPPORTED, BankUnsupported.code
            break
        except GrantRevoked:  # the app's client at the bank is gone, its grants with it
            outcome, error = RevocationOutcome.REVOKED, None
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
