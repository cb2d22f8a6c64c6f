"""Accepting an erasure request: one per user, idempotent, with its statutory deadline.

The request row is written in the same transaction that marks the user ``erasing``
(:attr:`aggregator.models.User.erasing_since`), so from the moment the API answers 202
no new link session starts for the user. A second request for the same user finds the
first by ``user_digest`` (unique), also after the user is long gone, and returns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.ids import ApplicationId, new_id
from aggregator.models import ErasureRequest, ErasureState, User
from aggregator.models.base import table_of, utcnow
from aggregator.settings import Settings
from aggregator.settings.erasure import DEFAULT_REVOKE_CONCURRENCY, DEFAULT_REVOKE_PER_BANK
from aggregator.store import RegionRouter

_users = table_of(User)

#: GDPR Art. 12(3): "without undue delay and in any event within one month".
DEFAULT_DEADLINE = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class ErasureConfig:
    """How erasure runs; ``deadline`` is the statutory limit (CCPA: 45 days)."""

    deadline: timedelta = DEFAULT_DEADLINE
    #: Attempts per revocation within one run, and the first backoff (doubling).
    revoke_attempts: int = 3
    revoke_backoff: float = 0.5
    #: Revocations in flight at once: at one bank, and over all banks. Grants are revoked
    #: concurrently (a user's N grants cost one bank round trip, not N), but a bank sees
    #: no more than a few calls of ours at once: its rate limits answer a burst with 429.
    revoke_per_bank: int = DEFAULT_REVOKE_PER_BANK
    revoke_concurrency: int = DEFAULT_REVOKE_CONCURRENCY
    #: How long one run owns a request before another process may resume it.
    lease: timedelta = timedelta(minutes=5)

    @classmethod
    def from_settings(cls, settings: Settings) -> ErasureConfig:
        """The configured deadline and revocation bounds (``[erasure]``), defaults
        otherwise."""
        return cls(deadline=timedelta(days=settings.erasure_deadline_days),
                   revoke_per_bank=settings.erasure_revoke_per_bank,
                   revoke_concurrency=settings.erasure_revoke_concurrency)


def user_digest(custody: RegionCustody, user_id: str) -> bytes:
    """The HMAC a receipt keeps instead of the user id (answers "was X erased?")."""
    return custody.hasher.digest("erased_user", user_id)


async def find_request(
    session: AsyncSession, custody: RegionCustody, user_id: str, app_id: ApplicationId
) -> ErasureRequest | None:
    """The application's erasure request for ``user_id``, done or not."""
    return (await session.execute(
        select(ErasureRequest).where(
            ErasureRequest.user_digest == user_digest(custody, user_id),
            ErasureRequest.application_id == app_id,
        )
    )).scalar_one_or_none()


async def request_erasure(
    router: RegionRouter, custody: RegionCustody, user_id: str, app_id: ApplicationId, *,
    config: ErasureConfig, actor: str, request_id: str | None = None,
    client_ip: str | None = None,
) -> ErasureRequest | None:
    """The erasure request of the application's user, created if there is none yet.

    None when the application has no such user (and never had one erased): the API
    answers 404, exactly as for a user of another application.
    """
    region = custody.region
    for _ in range(2):  # a concurrent first request wins the unique digest: re-read it
        try:
            async with router.session(region) as session, session.begin():
                found = await find_request(session, custody, user_id, app_id)
                if found is not None:
                    return found
                user = (await session.execute(
                    select(User).where(User.id == user_id, User.application_id == app_id)
                )).scalar_one_or_none()
                if user is None:
                    return None
                return await _create(session, custody, user, config, actor, request_id,
                                     client_ip)
        except IntegrityError:
            continue
    raise RuntimeError("erasure request neither created nor found")  # unreachable


async def _create(
    session: AsyncSession, custody: RegionCustody, user: User, config: ErasureConfig,
    actor: str, request_id: str | None, client_ip: str | None,
) -> ErasureRequest:
    now = utcnow()
    request = ErasureRequest(
        id=new_id("era", custody.region), application_id=user.application_id,
        user_id=user.id, user_digest=user_digest(custody, user.id),
        state=ErasureState.REQUESTED, requested_at=now, deadline_at=now + config.deadline,
        runs=0,
    )
    session.add(request)
    await session.execute(
        update(_users).where(_users.c.id == user.id, _users.c.erasing_since.is_(None))
        .values(erasing_since=now)
    )
    await session.flush()
    await audit.record(session, actor=actor, action="erasure.requested", target_id=request.id,
                       request_id=request_id, client_ip=client_ip)
    return request


async def open_requests(router: RegionRouter, region: str) -> list[ErasureRequest]:
    """The region's requests not completed yet, oldest deadline first."""
    async with router.reader(region) as session:
        return list((await session.execute(
            select(ErasureRequest).where(ErasureRequest.state != ErasureState.COMPLETED)
            .order_by(ErasureRequest.deadline_at, ErasureRequest.id)
        )).scalars())


def overdue(request: ErasureRequest, now: datetime) -> bool:
    if request.state is ErasureState.COMPLETED:
        return request.completed_at is not None and request.completed_at > request.deadline_at
    return now > request.deadline_at
