"""Console operators: accounts, passwords and sign-in sessions.

Decision: where operator accounts live. There is one database per region and no global
one, so an operator account is replicated to every region exactly like an application
(:mod:`aggregator.applications`): the same row with the same global id (``opr_…``) is
written to every configured region, and sessions are too. Why not a designated home
region: the console must keep working, showing the other regions, while any one region's
database is down (README: Operator console), and a home region would be the one outage
that locks every operator out. Replication is allowed because these rows hold no personal
data of end users (a handle, a role, an argon2id hash, a token digest) and no region's
user data; each region's audit chain records the sign-ins it saw.

Consequences, accepted and bounded:

- creating an operator writes every region or none (flush everywhere, then commit), so
  every region must be up for ``aggregator operators create``;
- a sign-in writes its session to every region that answers and is then valid in those;
  sign-out deletes it from every region that answers. A region down at sign-out keeps a
  stale row that can only be used within the idle timeout of the operator's last click
  (the touch, at most once a minute, reaches every region that answers), and never past
  the absolute lifetime;
- reads (sign-in, resuming a session) ask the regions in configured order and take the
  first that answers. A session opened while an earlier region was down is unknown to
  that region, so once it answers again the operator signs in again: it fails closed.

Passwords are hashed with argon2id through ``argon2-cffi`` (RFC 9106 §4's second
recommended parameter set, the library's default); a hash made with older parameters is
upgraded at the next sign-in. A sign-in with an unknown name still runs one hash, so the
answer time does not tell names apart. Session tokens are 256-bit random values held in
the operator's ``__Host-`` cookie; only their SHA-256 is stored, like API keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.errors import ConfigError
from aggregator.ids import OperatorId, new_id, secret_digest
from aggregator.models import Operator, OperatorRole, OperatorSession
from aggregator.models.base import utcnow
from aggregator.store.outage import REGION_DOWN
from aggregator.store.router import RegionRouter

T = TypeVar("T")

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 takes any length; this bounds the work one request can ask for
#: A session ends after this long without a request, and after LIFETIME in any case.
IDLE_TIMEOUT = timedelta(minutes=30)
LIFETIME = timedelta(hours=12)
#: last_seen_at moves at most this often (each move writes every region).
TOUCH_EVERY = timedelta(minutes=1)


class NoRegionAvailable(ConfigError):
    """No region's database answered: the console cannot sign anyone in."""

    code = "no_region_available"


@dataclass(frozen=True, slots=True)
class SignedIn:
    """An operator with a live session."""

    operator_id: OperatorId
    name: str
    role: OperatorRole
    session_digest: bytes

    @property
    def is_admin(self) -> bool:
        return self.role is OperatorRole.ADMIN


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ConfigError(
            "operator NAME must be 2-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ConfigError(
            f"the password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters long"
        )
    return password


async def create_operator(
    router: RegionRouter, name: str, role: OperatorRole, password: str
) -> OperatorId:
    """Register an operator in every region (all or none); audited as ``operator.created``."""
    check_name(name)
    operator_id = new_id("opr")
    digest = _hasher().hash(check_password(password))
    now = utcnow()
    async with AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(router.session(region)) for region in router.regions
        ]
        for session in sessions:
            taken = (await session.execute(
                select(Operator.id).where(Operator.name == name)
            )).scalar_one_or_none()
            if taken is not None:
                raise ConfigError(f"operator NAME {name!r} exists already")
            session.add(Operator(id=operator_id, name=name, role=role, password_hash=digest,
                                 created_at=now))
            await session.flush()
            await audit.record(session, actor="operator", action="operator.created",
                               target_id=operator_id)
        for session in sessions:
            await session.commit()
    return operator_id


async def sign_in(
    router: RegionRouter, name: str, password: str, *, request_id: str | None = None,
    client_ip: str | None = None,
) -> tuple[SignedIn, str] | None:
    """Check the password; on success open a session and return it with its token.

    Every attempt, failed or not, is in the audit trail of each region that answers
    (``operator.signed_in`` / ``operator.sign_in_failed``); a failure names the operator
    only when the name exists (the trail never holds what someone typed).
    """
    too_long = len(password) > MAX_PASSWORD  # refused, after the same work as any other
    operator = await _first_answer(router, lambda s: s.scalar(
        select(Operator).where(Operator.name == name, Operator.disabled_at.is_(None))
    ))
    hasher = _hasher()
    ok = False
    try:
        hasher.verify(operator.password_hash if operator and not too_long else _dummy_hash(),
                      password[:MAX_PASSWORD])
        ok = operator is not None and not too_long
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or operator is None:
        # The actor is whoever typed (unknown); the target, the account they tried.
        failed = operator.id if operator else None

        async def refused(session: AsyncSession) -> None:
            await audit.record(session, actor="operator", action="operator.sign_in_failed",
                               target_id=failed, request_id=request_id, client_ip=client_ip)

        await _everywhere(router, refused)
        return None
    token = secrets.token_urlsafe(32)
    digest = secret_digest(token)
    now = utcnow()
    rehash = hasher.check_needs_rehash(operator.password_hash)
    new_hash = hasher.hash(password) if rehash else None

    async def write(session: AsyncSession) -> None:
        session.add(OperatorSession(token_digest=digest, operator_id=operator.id, created_at=now,
                                    last_seen_at=now, expires_at=now + LIFETIME))
        if new_hash is not None:
            await session.execute(update(Operator).where(Operator.id == operator.id)
                                  .values(password_hash=new_hash))
        await session.flush()
        await audit.record(session, actor=operator.id, action="operator.signed_in",
                           target_id=operator.id, request_id=request_id, client_ip=client_ip)

    if not await _everywhere(router, write):
        raise NoRegionAvailable("no region's database answered; nobody can sign in now")
    return SignedIn(OperatorId(operator.id), operator.name, operator.role, digest), token


async def resume(router: RegionRouter, token: str, *, now: datetime | None = None
                 ) -> SignedIn | None:
    """The operator of a live session, or None (unknown, idle too long, expired, disabled)."""
    now = now or utcnow()
    digest = secret_digest(token)
    row = await _first_answer(router, lambda s: _live_session(s, digest))
    if row is None or row.expires_at <= now or row.last_seen_at + IDLE_TIMEOUT <= now:
        return None
    if row.last_seen_at + TOUCH_EVERY <= now:
        await _everywhere(router, lambda s: _touch(s, digest, now))
    return SignedIn(OperatorId(row.id), row.name, row.role, digest)


async def sign_out(router: RegionRouter, who: SignedIn, *, request_id: str | None = None,
                   client_ip: str | None = None) -> None:
    """End the session in every region that answers; audited as ``operator.signed_out``."""

    async def end(session: AsyncSession) -> None:
        await session.execute(delete(OperatorSession)
                              .where(OperatorSession.token_digest == who.session_digest))
        await audit.record(session, actor=who.operator_id, action="operator.signed_out",
                           target_id=who.operator_id, request_id=request_id,
                           client_ip=client_ip)

    await _everywhere(router, end)


def csrf_token(token: str) -> str:
    """The form token of a session: derived from the cookie's secret, which a cross-site
    page can neither read nor guess (OWASP: HMAC-based synchronizer token)."""
    mac = hmac.new(token.encode("ascii"), b"aggregator/console/csrf/v1", hashlib.sha256)
    return mac.hexdigest()


def csrf_matches(token: str, presented: str) -> bool:
    return hmac.compare_digest(csrf_token(token).encode(), presented.encode("utf-8"))


async def _live_session(session: AsyncSession, digest: bytes) -> Any:
    return (await session.execute(
        select(OperatorSession.last_seen_at, OperatorSession.expires_at, Operator.id,
               Operator.name, Operator.role)
        .join(Operator, Operator.id == OperatorSession.operator_id)
        .where(OperatorSession.token_digest == digest, Operator.disabled_at.is_(None))
    )).one_or_none()


async def _touch(session: AsyncSession, digest: bytes, now: datetime) -> None:
    await session.execute(update(OperatorSession)
                          .where(OperatorSession.token_digest == digest)
                          .values(last_seen_at=now))


async def _first_answer(
    router: RegionRouter, read: Callable[[AsyncSession], Awaitable[T]]
) -> T | None:
    """The answer of the first region (in configured order) whose database answers;
    :class:`NoRegionAvailable` when none does."""
    for region in router.regions:
        try:
            async with router.reader(region) as session:
                return await read(session)
        except REGION_DOWN:
            continue
    raise NoRegionAvailable("no region's database answered; nobody can sign in now")


async def _everywhere(
    router: RegionRouter, write: Callable[[AsyncSession], Awaitable[object]]
) -> list[str]:
    """Run ``write`` in its own transaction in every region that answers; the regions done."""
    done = []
    for region in router.regions:
        try:
            async with router.session(region) as session, session.begin():
                await write(session)
        except REGION_DOWN:
            continue
        done.append(region)
    return done
