"""A connection's access token, fresh: opened from its sealed column, refreshed when due.

Refreshing rotates the refresh token at strict banks, and presenting a retired one
revokes the whole grant (docs/architecture.md, "Refreshing"), so two processes must
never refresh one credential at once and a refresh must never be retried blindly. The
protocol, all on the ``credentials`` row:

1. *claim*: one compare-and-set ``UPDATE`` on ``version`` that also takes the lease
   (``lease_owner``, ``lease_expires_at``) and sets ``refresh_started_at``; it commits
   before the request leaves, so a crash afterwards is visible;
2. *refresh* at the bank, outside any transaction;
3. *persist*: a second compare-and-set on the claimed version stores the sealed new
   tokens, the next ``refresh_due_at`` and clears the lease, in one transaction.

A claim that loses (another process holds the lease) waits briefly for that process's
result instead of refreshing again. A row whose ``refresh_started_at`` is set under an
expired lease crashed mid-refresh: the bank may already have rotated, so it is left to
the refresh worker's resolution rather than retried here (docs/architecture.md, "Refreshing").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.bankhealth import CallRecorder
from aggregator.custody import RegionCustody
from aggregator.errors import GatewayError
from aggregator.ids import ConnectionId
from aggregator.models import Connection, ConnectionStatus, Credential
from aggregator.models.base import table_of, utcnow
from aggregator.reauth import require_reauth
from aggregator.sealing import Field
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory, UnknownBank
from connectors import (
    BankProtocolError,
    BankUnavailable,
    ConnectorError,
    DPoPKey,
    EgressRefused,
    GrantRevoked,
    RefreshPolicy,
    TokenSet,
)
from vault import DataKeyDestroyed, WrappedKey

log = logging.getLogger(__name__)

#: Refresh this long before the access token expires, so a request never races expiry.
EXPIRY_SKEW = timedelta(seconds=30)
#: How long a claim owns the row; far above the OAuth client's 10 s timeout.
LEASE = timedelta(seconds=60)
#: How long a losing claimant waits for the winner's tokens, and how often it looks.
WAIT_FOR_PEER = 5.0
_POLL = 0.1

_credentials = table_of(Credential)


class ConnectionNotActive(GatewayError):
    """Raised when a connection that is revoked, in error or awaiting re-consent is used."""

    code = "conflict"


class CredentialBusy(GatewayError):
    """Raised when another process holds the credential's refresh lease, or crashed in it."""

    code = "credential_busy"


def refresh_due_at(
    expires_at: datetime | None, now: datetime, *, rng: random.Random | None = None,
    policy: RefreshPolicy | None = None,
) -> datetime | None:
    """When to refresh: ahead of expiry by a fraction of the lifetime, never too soon.

    The lead is a fifth of the lifetime (at most 10 min) plus jitter of up to a tenth, so
    a fleet does not stampede. The profile's floor (:class:`~connectors.RefreshPolicy`,
    default: not within half the lifetime, not within a minute) bounds it from below: a
    bank issuing 15-second tokens sees one refresh a minute per connection, not one per
    second, and a sync needing a token in between refreshes on demand
    (:func:`fresh_grant`). ``None`` (the bank gave no ``expires_in``) means "not due".
    """
    if expires_at is None:
        return None
    policy = policy or RefreshPolicy()
    lifetime = max((expires_at - now).total_seconds(), 0.0)
    lead = min(lifetime / 5, 600.0)
    jitter = (rng or random.SystemRandom()).uniform(0.0, lifetime / 10)
    floor = max(lifetime * policy.min_lifetime_percent / 100, policy.min_interval_seconds)
    return max(now + timedelta(seconds=floor), expires_at - timedelta(seconds=lead + jitter))


def expiry_skew(credential: Credential) -> timedelta:
    """How long an access token must still live to be handed to a sync.

    :data:`EXPIRY_SKEW`, but at most a third of the token's lifetime (as issued: from
    ``updated_at``, when it was stored, to its expiry): a 15-second token is good for
    10 seconds, rather than never good enough and refreshed by every sync.
    """
    expires, issued = credential.access_expires_at, credential.updated_at
    if expires is None or issued is None:
        return EXPIRY_SKEW
    return min(EXPIRY_SKEW, max(expires - issued, timedelta(0)) / 3)


@dataclass(frozen=True, slots=True)
class Grant:
    """What the sync job needs of a connection: who owns it, where, and a live token."""

    connection: Connection
    access_token: str
    #: The connection's DPoP key (RFC 9449) where its bank binds tokens to one.
    dpop_key: DPoPKey | None = None

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"Grant(connection={self.connection.id!r}, access_token='***')"


async def load_credential(session: AsyncSession, connection_id: ConnectionId) -> Credential:
    found = (await session.execute(
        select(Credential).where(Credential.connection_id == connection_id)
    )).scalar_one_or_none()
    if found is None:
        raise ConnectionNotActive(f"connection {connection_id} holds no credential")
    return found


async def open_token(
    custody: RegionCustody, key: WrappedKey, credential: Credential, column: str
) -> str | None:
    return await custody.sealer.open_from(key, credential, column)


async def open_dpop_key(
    custody: RegionCustody, key: WrappedKey, credential: Credential
) -> DPoPKey | None:
    """The credential's DPoP key (RFC 9449), or None for a bearer-token grant."""
    pem = await custody.sealer.open_from(key, credential, "dpop_key_sealed")
    return DPoPKey.from_private_bytes(pem) if pem is not None else None


async def fresh_grant(
    router: RegionRouter,
    custody: RegionCustody,
    banks: BankDirectory,
    connection_id: ConnectionId,
    *,
    owner: str,
    recorder: CallRecorder | None = None,
) -> Grant:
    """The connection with an access token valid for at least :data:`EXPIRY_SKEW`."""
    deadline = asyncio.get_running_loop().time() + WAIT_FOR_PEER
    while True:
        async with router.reader(custody.region) as session:
            connection = await session.get(Connection, connection_id)
            if connection is None or connection.status is not ConnectionStatus.ACTIVE:
                state = "missing" if connection is None else connection.status.value
                raise ConnectionNotActive(f"connection {connection_id} is {state}")
            credential = await load_credential(session, connection_id)
            key = await custody.data_keys.load(session, connection.user_id)
        now = utcnow()
        expires = credential.access_expires_at
        if expires is None or expires > now + expiry_skew(credential):
            token = await open_token(custody, key, credential, "access_token_sealed")
            return Grant(connection, token or "", await open_dpop_key(custody, key, credential))
        if credential.refresh_started_at is not None and _lease_over(credential, now):
            raise CredentialBusy(
                f"credential {credential.id}: an earlier refresh did not finish; the refresh "
                "worker resolves it"
            )
        if await _claim(router, custody.region, credential, owner, now):
            return await _refresh(router, custody, banks, connection, credential, key,
                                  _Tally(recorder, owner))
        if asyncio.get_running_loop().time() >= deadline:
            raise CredentialBusy(f"credential {credential.id} is being refreshed elsewhere")
        await asyncio.sleep(_POLL)


def _lease_over(credential: Credential, now: datetime) -> bool:
    return credential.lease_expires_at is None or credential.lease_expires_at <= now


async def _claim(
    router: RegionRouter, region: str, credential: Credential, owner: str, now: datetime
) -> bool:
    c = _credentials.c
    async with router.session(region) as session, session.begin():
        result = await session.execute(
            update(_credentials)
            .where(c.id == credential.id, c.version == credential.version)
            .where((c.lease_expires_at.is_(None)) | (c.lease_expires_at <= now))
            .values(
                lease_owner=owner[:64], lease_expires_at=now + LEASE, refresh_started_at=now,
                version=c.version + 1,
            )
        )
        return getattr(result, "rowcount", 0) == 1


class _Tally:
    """Where an inline refresh is counted (docs/architecture.md, "Bank health"): the same
    figures and history the worker keeps, in memory until the recorder's next flush."""

    def __init__(self, recorder: CallRecorder | None, owner: str) -> None:
        self.recorder, self.owner = recorder, owner
        self.started = time.perf_counter()

    def done(self, connection: Connection, outcome: str, code: str | None,
             *, sent: bool = True) -> None:
        if self.recorder is None:
            return
        region = self.recorder.router.region_of(connection.id)
        if sent:
            self.recorder.call(region, connection.bank_id, "refresh", outcome,
                               time.perf_counter() - self.started)
        self.recorder.attempt(region, connection_id=connection.id,
                              user_id=connection.user_id, bank_id=connection.bank_id,
                              outcome=outcome, error_code=code, worker=self.owner)


async def _refresh(
    router: RegionRouter,
    custody: RegionCustody,
    banks: BankDirectory,
    connection: Connection,
    credential: Credential,
    key: WrappedKey,
    tally: _Tally,
) -> Grant:
    claimed = credential.version + 1
    refresh_token = await open_token(custody, key, credential, "refresh_token_sealed")
    dpop_key = await open_dpop_key(custody, key, credential)
    try:
        if refresh_token is None:
            raise GrantRevoked(f"{connection.bank_id}: the grant holds no refresh token")
        tally.started = time.perf_counter()
        tokens = await banks.oauth(connection.bank_id).refresh(refresh_token, dpop_key=dpop_key)
    except GrantRevoked as exc:
        tally.done(connection, "invalid_grant", exc.code, sent=refresh_token is not None)
        await _needs_reauth(router, custody.region, connection, credential.id, claimed)
        raise
    except BankUnavailable as exc:
        tally.done(connection, "rate_limited" if exc.retry_after is not None
                   else "unavailable", exc.code)
        await _release(
            router, custody.region, credential.id, claimed, keep_started=_maybe_sent(exc)
        )
        raise
    except ConnectorError as exc:
        tally.done(connection, "protocol_error" if isinstance(exc, BankProtocolError)
                   else "error", exc.code, sent=not isinstance(exc, EgressRefused))
        await _release(router, custody.region, credential.id, claimed, keep_started=True)
        raise
    except BaseException:
        await _release(router, custody.region, credential.id, claimed, keep_started=True)
        raise
    tally.done(connection, "ok", None)
    await persist_refresh(router, custody, key, credential, claimed, tokens,
                          policy=refresh_policy(banks, connection.bank_id))
    return Grant(connection, tokens.access_token, dpop_key)


def refresh_policy(banks: BankDirectory, bank_id: str) -> RefreshPolicy:
    """The bank profile's refresh floor; the default for a bank without a profile."""
    profile = getattr(banks, "profile", None)  # a directory without profiles: the default
    try:
        return profile(bank_id).refresh if profile is not None else RefreshPolicy()
    except (UnknownBank, AttributeError):
        return RefreshPolicy()


def _maybe_sent(exc: BaseException) -> bool:
    """Whether the bank may have rotated the token although we saw no answer."""
    cause = exc.__cause__
    if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout):
        return False  # the request never reached the bank
    return isinstance(cause, httpx.TimeoutException | httpx.NetworkError)


@dataclass(frozen=True, slots=True)
class Rotation:
    """What a bank answered for one claimed credential, waiting to be stored.

    ``claimed`` is the version the refresh owns; ``key`` the user's data key.
    """

    credential: Credential
    claimed: int
    tokens: TokenSet  # masks its tokens in repr
    key: WrappedKey
    policy: RefreshPolicy | None = None  # the bank profile's floor; None: the default


async def persist_refresh(
    router: RegionRouter,
    custody: RegionCustody,
    key: WrappedKey,
    credential: Credential,
    claimed: int,
    tokens: TokenSet,
    *,
    max_interval: timedelta | None = None,
    policy: RefreshPolicy | None = None,
) -> None:
    """Store rotated tokens if the claim still holds; the bank has already retired the old.

    ``max_interval`` caps the next ``refresh_due_at`` (the refresh worker refreshes
    long-lived tokens at least that often: some banks revoke idle refresh tokens).

    Raises :class:`CredentialBusy` (lease lost, nothing written) when the claim lapsed,
    when the row is gone, or when the user's data key was destroyed: the last two are an
    erasure that ran while the bank answered, and must not be undone by this write.
    """
    [stored] = await persist_refreshes(
        router, custody, [Rotation(credential, claimed, tokens, key, policy)],
        max_interval=max_interval,
    )
    if not stored:
        raise CredentialBusy(f"credential {credential.id}: refresh lease lost (or user erased)")


async def persist_refreshes(
    router: RegionRouter,
    custody: RegionCustody,
    rotations: Sequence[Rotation],
    *,
    max_interval: timedelta | None = None,
    before_commit: Callable[[], None] | None = None,
) -> list[bool]:
    """:func:`persist_refresh` for several credentials in one transaction; which were stored.

    Each row is still its own compare-and-set on its claimed version: a lost claim, a
    deleted row or a destroyed data key (an erasure) writes nothing for that row and
    does not hold back the others. One ``UPDATE`` is sent for the whole batch
    (executemany); only when the database reports fewer rows than sent are the rows read
    back to learn which ones took. ``before_commit`` runs after the writes, before the
    commit (the worker's crash tests stop there).
    """
    now = utcnow()
    sealed: list[tuple[int, dict[str, object]]] = []
    for i, rotation in enumerate(rotations):
        try:
            sealed.append((i, await _sealed_values(custody, rotation, now, max_interval)))
        except DataKeyDestroyed:
            # Erasure shredded the user's key while the bank answered: the user is gone, so
            # the tokens must not be written back (there is nothing left to write them to).
            log.warning("credential %s: data key destroyed before persisting (erased)",
                        rotation.credential.id)
    stored = [False] * len(rotations)
    if not sealed:
        return stored
    sealed.sort(key=lambda item: rotations[item[0]].credential.id)  # one lock order for all
    async with router.session(custody.region) as session, session.begin():
        result = await session.execute(_STORE, [values for _, values in sealed])
        if getattr(result, "rowcount", -1) == len(sealed):
            for i, _ in sealed:
                stored[i] = True
        else:
            written = await _written(session, [values for _, values in sealed])
            for i, values in sealed:
                stored[i] = values["b_id"] in written
        if before_commit is not None:
            before_commit()
    for i, _ in sealed:
        if not stored[i]:
            # Our lease lapsed and someone else took the row, or erasure deleted it: never
            # overwrite, never resurrect.
            log.error("credential %s: refresh lease lost before persisting",
                      rotations[i].credential.id)
    return stored


def _next_due(tokens: TokenSet, now: datetime, max_interval: timedelta | None,
              policy: RefreshPolicy | None) -> datetime | None:
    due = refresh_due_at(tokens.expires_at, now, policy=policy)
    if max_interval is not None:
        due = now + max_interval if due is None else min(due, now + max_interval)
    return due


async def _sealed_values(
    custody: RegionCustody, rotation: Rotation, now: datetime, max_interval: timedelta | None
) -> dict[str, object]:
    """The parameters of :data:`_STORE` for one rotation; seals the new tokens."""
    credential, tokens, key = rotation.credential, rotation.tokens, rotation.key
    access = await custody.sealer.seal(
        key, Field("credentials", "access_token_sealed", credential.id, credential.user_id),
        tokens.access_token,
    )
    refresh = credential.refresh_token_sealed  # a bank that does not rotate keeps it
    if tokens.refresh_token is not None:
        refresh = await custody.sealer.seal(
            key, Field("credentials", "refresh_token_sealed", credential.id, credential.user_id),
            tokens.refresh_token,
        )
    return {
        "b_id": credential.id, "b_claimed": rotation.claimed, "b_version": rotation.claimed + 1,
        "b_access": access, "b_refresh": refresh, "b_expires": tokens.expires_at,
        "b_due": _next_due(tokens, now, max_interval, rotation.policy),
        "b_scope": credential.scope if tokens.scope is None else tokens.scope[:1024],
        "b_now": now,
    }


_c = _credentials.c
# The claimed version is the compare-and-set: a row leased or erased meanwhile is skipped.
_STORE = (
    update(_credentials)
    .where(_c.id == bindparam("b_id"), _c.version == bindparam("b_claimed"))
    .values(
        access_token_sealed=bindparam("b_access"), refresh_token_sealed=bindparam("b_refresh"),
        access_expires_at=bindparam("b_expires"), refresh_due_at=bindparam("b_due"),
        scope=bindparam("b_scope"), lease_owner=None, lease_expires_at=None,
        refresh_started_at=None, attempts=0, version=bindparam("b_version"),
        updated_at=bindparam("b_now"),
    )
)


async def _written(session: AsyncSession, batch: list[dict[str, object]]) -> set[object]:
    """Which rows of ``batch`` hold this batch's access token now (its nonce is unique)."""
    rows = (await session.execute(
        select(_c.id, _c.access_token_sealed).where(_c.id.in_([v["b_id"] for v in batch]))
    )).all()
    ours = {v["b_id"]: v["b_access"] for v in batch}
    return {row.id for row in rows if bytes(row.access_token_sealed) == ours.get(row.id)}


async def _release(
    router: RegionRouter, region: str, credential_id: str, claimed: int, *, keep_started: bool
) -> None:
    c = _credentials.c
    values: dict[str, object] = {"lease_owner": None, "lease_expires_at": None}
    if not keep_started:
        values["refresh_started_at"] = None
    async with router.session(region) as session, session.begin():
        await session.execute(
            update(_credentials)
            .where(c.id == credential_id, c.version == claimed)
            .values(attempts=c.attempts + 1, version=claimed + 1, **values)
        )


async def _needs_reauth(
    router: RegionRouter, region: str, connection: Connection, credential_id: str, claimed: int
) -> None:
    c = _credentials.c
    async with router.session(region) as session, session.begin():
        await session.execute(
            update(_credentials).where(c.id == credential_id, c.version == claimed).values(
                lease_owner=None, lease_expires_at=None, refresh_started_at=None,
                refresh_due_at=None, version=claimed + 1,
            )
        )
        await require_reauth(session, connection.id, reason="invalid_grant", actor="gateway")
