"""Idempotency keys in a region's store: claim, answer, replay, release, purge.

A request sent with an ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header)
first *claims* the key: an ``INSERT … ON CONFLICT DO NOTHING`` of an in-progress row
keyed by (application, key). Exactly one of any number of concurrent claims inserts
(the primary key decides, on PostgreSQL as on SQLite); the others read the row and get
one of the outcomes below, so two requests with one key never both do the work:

- :class:`Claimed`: this request does the work, then :meth:`IdempotencyStore.complete`
  stores its answer (or :meth:`~IdempotencyStore.release` drops the claim when the
  answer must not be replayed, e.g. a 5xx: the retry should do the work again);
- :class:`Replay`: the stored answer of an earlier request with the same fingerprint;
- :class:`Busy`: an earlier request with this key is still in progress;
- :class:`Mismatch`: the key was used for a different request.

A claim holds a lock until ``locked_until``; a request that crashed leaves its claim
behind, and once the lock has expired the next retry takes it over (compare-and-set on
the dead claim's owner), so retries are never blocked for longer than the lock. An
expired row (``expires_at``, 24 hours after the claim) counts as absent: the key can be
used again at once, and :func:`purge_expired` deletes such rows in bounded batches.

What is stored is unreadable from the database alone. The key and the request are
HMAC-SHA256 under the region's pepper (:class:`~aggregator.sealing.KeyedHasher`). An
answer about a user (``user_id`` set: a created user, a link session) is sealed under
that user's data key (``response_user_sealed``, a :mod:`aggregator.sealing` place naming
the record and its request), so erasure, which destroys the key, also makes copies of
it in backups unreadable. Other answers are AES-256-GCM under a key derived from the
pepper for the application (``response_sealed``), with an AAD naming the application,
the key and the request, so a blob copied to another row does not open. That matters:
answers hold secrets shown once (a webhook signing secret, a link token) and an app's
own id for its user (personal data the users table seals too).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    ColumnElement,
    Executable,
    Result,
    Row,
    and_,
    bindparam,
    delete,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.custody import RegionCustody
from aggregator.ids import ApplicationId, UserId
from aggregator.models import IdempotencyRecord, IdempotencyState
from aggregator.models.base import table_of, utcnow
from aggregator.sealing import Field, KeyedHasher
from aggregator.store.router import RegionRouter
from vault import DataKeyDestroyed

_keys = table_of(IdempotencyRecord)
_CONTEXT = b"aggregator/idempotent-response/v1"
_NONCE = 12
#: Takeovers after a lost race are retried at most this often (each one is a row that
#: changed between two statements: another claim, a completion, an expiry).
_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class IdempotencyPolicy:
    """How long answers are kept and claims are locked.

    ``lock_timeout`` must exceed the slowest operation's duration (a sync waits on a
    bank), or a retry could take over a claim whose request is still working.
    """

    ttl: timedelta = timedelta(hours=24)
    lock_timeout: timedelta = timedelta(minutes=5)
    #: Seconds a client is told to wait (Retry-After) while the first request works.
    retry_after: int = 1


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """An answer as replayed: status, the headers that matter, body, original request."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    request_id: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request holds the key and does the work."""

    region: str
    application_id: ApplicationId
    key_digest: bytes
    fingerprint: bytes
    owner: str


@dataclass(frozen=True, slots=True)
class Replay:
    """An earlier request with this key and the same fingerprint answered this."""

    response: StoredResponse


@dataclass(frozen=True, slots=True)
class Busy:
    """An earlier request with this key is still doing the work."""

    retry_after: int


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was used for a different request (method, path or body)."""


Outcome = Claimed | Replay | Busy | Mismatch


def key_digest(hasher: KeyedHasher, app_id: str, key: str) -> bytes:
    return hasher.digest("idempotency_key", app_id, key)


def fingerprint(hasher: KeyedHasher, app_id: str, method: str, path: str, query: str,
                body: str) -> bytes:
    """What makes two requests "the same request" for one key: method, path, query and
    the body (canonical JSON when it is JSON, so key order and spacing do not count)."""
    return hasher.digest("idempotency_request", app_id, method, path, query, body)


def _aad(app_id: str, digest: bytes, print_: bytes) -> bytes:
    parts = (app_id.encode("ascii"), digest, print_)
    return _CONTEXT + b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def _plain(response: StoredResponse) -> bytes:
    headers = json.dumps([list(h) for h in response.headers]).encode("utf-8")
    return len(headers).to_bytes(4, "big") + headers + response.body


def _parsed(plain: bytes, status: int, request_id: str) -> StoredResponse:
    size = int.from_bytes(plain[:4], "big")
    headers = tuple((str(k), str(v)) for k, v in json.loads(plain[4:4 + size]))
    return StoredResponse(status, headers, plain[4 + size:], request_id)


def seal_response(hasher: KeyedHasher, claim: Claimed, response: StoredResponse) -> bytes:
    nonce = os.urandom(_NONCE)
    aead = AESGCM(hasher.digest("idempotency_response", claim.application_id))
    aad = _aad(claim.application_id, claim.key_digest, claim.fingerprint)
    return nonce + aead.encrypt(nonce, _plain(response), aad)


def open_response(hasher: KeyedHasher, app_id: str, digest: bytes, print_: bytes,
                  status: int, blob: bytes, request_id: str) -> StoredResponse:
    aead = AESGCM(hasher.digest("idempotency_response", app_id))
    plain = aead.decrypt(blob[:_NONCE], blob[_NONCE:], _aad(app_id, digest, print_))
    return _parsed(plain, status, request_id)


def user_place(app_id: str, digest: bytes, print_: bytes, user_id: str) -> Field:
    """Where an answer about ``user_id`` is sealed: this record, for this request only."""
    return Field(_keys.name, "response_user_sealed",
                 f"{app_id}/{digest.hex()}/{print_.hex()}", user_id)


# Built once, executed with parameters: statements carrying their values would be
# compiled again on every call by the residency guard to find the values to check.
_CLAIM = {
    "postgresql": postgresql.insert(_keys).on_conflict_do_nothing().returning(_keys.c.owner),
    "sqlite": sqlite.insert(_keys).on_conflict_do_nothing().returning(_keys.c.owner),
}
_HELD = and_(_keys.c.application_id == bindparam("held_app"),
             _keys.c.key_digest == bindparam("held_key"),
             _keys.c.owner == bindparam("held_owner"),
             _keys.c.state == IdempotencyState.IN_PROGRESS)
_COMPLETE = update(_keys).where(_HELD)
_RELEASE = delete(_keys).where(_HELD)


def _held(claim: Claimed) -> dict[str, object]:
    return {"held_app": claim.application_id, "held_key": claim.key_digest,
            "held_owner": claim.owner}


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True, slots=True)
class _Done:
    rowcount: int
    row: Row[Any] | None


def _done(result: Result[Any]) -> _Done:
    row = result.first() if getattr(result, "returns_rows", False) else None
    return _Done(_rowcount(result), row)


class IdempotencyStore:
    """Claims, answers and replays of idempotency keys in every region of ``router``.

    Example::

        store = IdempotencyStore(router, {r: c.hasher for r, c in custody.items()})
        outcome = await store.claim("eu", app_id, key, print_, request_id="req_…")
        if isinstance(outcome, Claimed):
            ...  # do the work, then:
            await store.complete(outcome, StoredResponse(201, headers, body, "req_…"))
    """

    def __init__(self, router: RegionRouter, hashers: Mapping[str, KeyedHasher],
                 policy: IdempotencyPolicy | None = None, *,
                 custody: Mapping[str, RegionCustody] | None = None) -> None:
        self.router = router
        self.hashers = hashers
        self.policy = policy or IdempotencyPolicy()
        #: Seals answers about a user under the user's data key; without it (tools that
        #: only purge) every answer is sealed under the pepper-derived key.
        self.custody = custody

    def _pk(self, claim: Claimed) -> ColumnElement[bool]:
        return and_(_keys.c.application_id == claim.application_id,
                    _keys.c.key_digest == claim.key_digest)

    async def claim(self, region: str, app_id: ApplicationId, digest: bytes, print_: bytes,
                    *, request_id: str, now: datetime | None = None) -> Outcome:
        """Claim the key for this request, or say why not (see the module docstring)."""
        now = now or utcnow()
        claim = Claimed(region, app_id, digest, print_, secrets.token_hex(16))
        fresh = {
            "fingerprint": print_, "state": IdempotencyState.IN_PROGRESS,
            "owner": claim.owner, "locked_until": now + self.policy.lock_timeout,
            "status": None, "response_sealed": None, "request_id": request_id,
            "user_id": None, "created_at": now, "expires_at": now + self.policy.ttl,
        }
        # An INSERT that did nothing tells by RETURNING no row (psycopg reports no
        # rowcount for it).
        claim_key = _CLAIM[self.router.engine(region).dialect.name]
        row = {"application_id": app_id, "key_digest": digest, **fresh}
        # The common case, a new key, is this one statement, committed on its own.
        if (await self._single(region, claim_key, row)).row is not None:
            return claim
        async with self.router.session(region) as session, session.begin():
            for _ in range(_ATTEMPTS):
                found = await self._decide(session, claim, fresh, now)
                if found is not None:
                    return found
                if (await session.execute(claim_key, row)).first() is not None:
                    return claim  # the row went away meanwhile (released, purged)
        # Each attempt lost a race to a row that then changed again: extraordinary
        # contention on one key; the client retries as it would for a busy key.
        return Busy(self.policy.retry_after)

    async def _single(self, region: str, statement: Executable,
                      params: Mapping[str, object]) -> _Done:
        """One statement in a transaction of its own.

        On PostgreSQL in autocommit mode: a single statement is atomic by itself, and
        this saves the ``BEGIN`` and ``COMMIT`` round trips on the path every request
        with a key takes twice. SQLite runs it in a write session, which takes the
        write lock at ``BEGIN`` (:mod:`aggregator.store.engines`).
        """
        engine = self.router.engine(region)
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                return _done(await auto.execute(statement, dict(params)))
        async with self.router.session(region) as session, session.begin():
            return _done(await session.execute(statement, dict(params)))

    async def _decide(self, session: AsyncSession, claim: Claimed,
                      fresh: Mapping[str, object], now: datetime) -> Outcome | None:
        row = (await session.execute(select(_keys).where(self._pk(claim)))).one_or_none()
        if row is None:
            return None  # released or purged since the insert: insert again
        if row.expires_at <= now:
            taken = _keys.c.expires_at <= now
        elif row.fingerprint != claim.fingerprint:
            return Mismatch()
        elif row.state is IdempotencyState.COMPLETED:
            if row.response_user_sealed is not None and row.status is not None:
                return Replay(await self._open_for_user(session, claim, row))
            blob = row.response_sealed
            if blob is None or row.status is None:
                raise ValueError("a completed idempotency record holds no answer")
            return Replay(open_response(
                self.hashers[claim.region], claim.application_id, claim.key_digest,
                claim.fingerprint, row.status, bytes(blob), row.request_id,
            ))
        elif row.locked_until is not None and row.locked_until > now:
            return Busy(self.policy.retry_after)
        else:  # the claimant died: take its claim over, unless another retry just did
            taken = (_keys.c.owner == row.owner) & (_keys.c.state == row.state)
        result = await session.execute(
            update(_keys).where(self._pk(claim), taken).values(**fresh))
        return claim if _rowcount(result) == 1 else None

    async def complete(self, claim: Claimed, response: StoredResponse,
                       user_id: UserId | None = None) -> bool:
        """Store the answer for replay; False if the claim was lost meanwhile.

        ``user_id`` ties the row to the user the answer is about, so erasing the user
        deletes it. A user that no longer exists (erased meanwhile) cannot be tied to:
        the claim is then released instead, and nothing about the user is kept.
        """
        values: dict[str, object] = {"state": IdempotencyState.COMPLETED,
                                     "status": response.status, "locked_until": None,
                                     "user_id": user_id}
        if user_id is not None and self.custody is not None:
            sealed = await self._seal_for_user(claim, response, user_id)
            if sealed is None:  # the user is being erased: keep nothing about them
                await self.release(claim)
                return False
            values["response_user_sealed"] = sealed
        else:
            values["response_sealed"] = seal_response(self.hashers[claim.region], claim,
                                                      response)
        try:
            done = await self._single(claim.region, _COMPLETE, {**_held(claim), **values})
        except IntegrityError:
            await self.release(claim)
            return False
        return done.rowcount == 1

    async def _seal_for_user(self, claim: Claimed, response: StoredResponse,
                             user_id: UserId) -> bytes | None:
        assert self.custody is not None
        custody = self.custody[claim.region]
        async with self.router.reader(claim.region) as session:
            try:
                key = await custody.data_keys.load(session, user_id)
            except DataKeyDestroyed:
                return None
        place = user_place(claim.application_id, claim.key_digest, claim.fingerprint, user_id)
        return await custody.sealer.seal(key, place, _plain(response))

    async def _open_for_user(self, session: AsyncSession, claim: Claimed,
                             row: Row[Any]) -> StoredResponse:
        if self.custody is None:
            raise ValueError("answers sealed for a user need the region's custody to open")
        custody = self.custody[claim.region]
        key = await custody.data_keys.load(session, row.user_id)
        place = user_place(claim.application_id, claim.key_digest, claim.fingerprint,
                           row.user_id)
        plain = await custody.sealer.open(key, place, bytes(row.response_user_sealed))
        return _parsed(plain, row.status, row.request_id)

    async def release(self, claim: Claimed) -> None:
        """Drop the claim: the next request with the key does the work again."""
        await self._single(claim.region, _RELEASE, _held(claim))


async def purge_expired(router: RegionRouter, region: str, *, limit: int = 500,
                        now: datetime | None = None) -> int:
    """Delete up to ``limit`` rows of ``region`` past their expiry; returns how many."""
    now = now or utcnow()
    async with router.session(region) as session, session.begin():
        due = (await session.execute(
            select(_keys.c.application_id, _keys.c.key_digest)
            .where(_keys.c.expires_at <= now).order_by(_keys.c.expires_at).limit(limit)
        )).all()
        if not due:
            return 0
        pk = tuple_(_keys.c.application_id, _keys.c.key_digest)
        result = await session.execute(delete(_keys).where(
            pk.in_([tuple(row) for row in due]), _keys.c.expires_at <= now))
    return _rowcount(result)
