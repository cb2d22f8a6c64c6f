"""What an erasure request shows: its state and, once done, the receipt that proves it.

A receipt names no person: the request id, an HMAC of the user id under the region's
pepper (whoever holds a user id can ask "was this user erased?" and compare, while the
receipt alone reveals nothing), rows deleted per table, each grant's revocation outcome
with its attempts, and when the job ran. Revocation outcomes are read live, so a retry
after completion shows up on the same receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.erasure.requests import overdue
from aggregator.models import ErasureRequest, ErasureRevocation, ErasureState, RevocationOutcome
from aggregator.models.base import utcnow


@dataclass(frozen=True)
class RevocationOut:
    """The outcome of revoking one of the user's grants at its bank."""

    bank_id: str
    outcome: RevocationOutcome
    attempts: int
    last_error: str | None
    raced_refresh: bool
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class ReceiptOut:
    """Proof of a completed erasure, free of personal data."""

    request_id: str
    region: str
    user_digest: str
    counts: dict[str, int]
    revocations: list[RevocationOut]
    started_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True)
class ErasureRequestOut:
    """An erasure request: where the job stands, its deadline, and its receipt when done."""

    id: str
    state: ErasureState
    requested_at: datetime
    deadline_at: datetime
    overdue: bool
    receipt: ReceiptOut | None


async def revocations_of(session: AsyncSession, request_id: str) -> list[RevocationOut]:
    rows = (await session.execute(
        select(ErasureRevocation).where(ErasureRevocation.request_id == request_id)
        .order_by(ErasureRevocation.n)
    )).scalars()
    return [
        RevocationOut(r.bank_id, r.outcome, r.attempts, r.last_error, r.raced_refresh,
                      r.first_attempt_at, r.last_attempt_at, r.revoked_at)
        for r in rows
    ]


async def request_view(
    session: AsyncSession, region: str, request: ErasureRequest, now: datetime | None = None
) -> ErasureRequestOut:
    receipt = None
    if request.state is ErasureState.COMPLETED:
        receipt = ReceiptOut(
            request.id, region, bytes(request.user_digest).hex(),
            {str(k): int(v) for k, v in (request.counts or {}).items()},
            await revocations_of(session, request.id), request.started_at,
            request.completed_at,
        )
    return ErasureRequestOut(request.id, request.state, request.requested_at,
                             request.deadline_at, overdue(request, now or utcnow()), receipt)
