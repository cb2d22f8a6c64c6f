"""Refreshing one leased credential: mark, call the bank, persist or back off or resolve.

The rotated tokens are stored by :func:`aggregator.sync.tokens.persist_refreshes`, the
same compare-and-set the sync job uses: the sealed tokens, the new expiry and the next
``refresh_due_at`` are written and the lease ends, only if the row is still at the
version this worker claimed. The worker's :class:`~aggregator.worker.commit.Committer`
commits the refreshes that finish together in one transaction (each row still its own
compare-and-set).

Crash safety, and the window that remains
-----------------------------------------
``refresh_started_at`` is committed before the request leaves: by the lease itself
(``lease_batch(mark_in_flight=True)``), or by :func:`mark_in_flight`.
A worker that later leases a row still carrying it knows the previous holder died (or
its lease lapsed) with a request possibly at the bank. It does not know whether the
bank rotated. It presents the stored refresh token exactly once.

The resolution rule (every path ends with live tokens stored, or with the connection
flagged through :func:`aggregator.reauth.require_reauth`, never ``active`` on a dead
grant). Every write to a credential row bumps ``version``; each step under a lease is a
compare-and-set on the version it claimed (:mod:`aggregator.worker.lease`,
:mod:`aggregator.worker.commit`):

- the bank answers with tokens: they are stored only if the row is still at our
  version. If it is not, our lease was taken over; the new holder presents the same
  refresh token, which the bank (having rotated it for us) refuses, and the holder,
  still at its version, flags the connection. Our tokens are dropped;
- the bank answers ``invalid_grant`` and the row is still at our version: nobody stored
  tokens since we claimed it, so the token we presented was the newest one. The grant is
  dead: the connection is flagged (``invalid_grant``, or ``invalid_grant_after_crash``
  for a takeover);
- the bank answers ``invalid_grant``, or may have received a request we saw no answer
  to (a timeout, a cancelled call), and the row is **no longer at our version**: our
  request went out under a lease that has since lapsed, and another worker took the row.
  Its tokens cannot be trusted: at a strict bank (rotation with reuse detection) our
  late presentation of the old token revoked the very grant they belong to, and a
  rotation it still holds uncommitted is dead too. Nothing is assumed either way:
  :func:`reverify` bumps the version (a commit pending under the other worker's claim is
  refused), clears the owner (no heartbeat extends it; the lease runs to its end) and
  marks the row in flight and due now. Its next lessee presents the stored refresh
  token once and stores the answer or flags the connection, by the two rules above. At a
  bank without reuse detection this can cost a live grant its pending rotation (the
  flag is then a false alarm); it never leaves a dead grant looking alive.

A worker never sends a refresh within ``lease_margin`` of its lease's end as it reckons
it (``RefreshContext.lease_deadlines``: taken before the lease's transaction, moved only
for the rows a heartbeat actually extended). A request sent earlier can still be at
the bank when the lease lapses (the worker stalled past its heartbeats): that is the
third case above.

What cannot be recovered: a process that dies (or stalls past its lease) *after* the
bank rotated the token and *before* the commit. The new refresh token existed only in
that process's memory; at a strict bank presenting the old one revokes the grant, so
the resolution ends in ``reauth_required`` — correctly flagged, but the user must
re-consent. For crashes the window is the wait for the group commit (at most two
commits, a few ms); for stalls it needs a pause longer than the lease (15 s by default,
kept alive by a heartbeat every 4 s). Closing it needs the bank's help (a reuse grace
period) or a durable journal of token responses written before the commit, which would
just move the same window to that journal's write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.bankhealth import CallRecorder
from aggregator.custody import RegionCustody
from aggregator.ids import ConnectionId
from aggregator.models import Connection, ConnectionStatus, Credential
from aggregator.models.base import table_of, utcnow
from aggregator.reauth import require_reauth
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory
from aggregator.sync.tokens import Rotation, open_dpop_key, refresh_policy
from aggregator.worker.breaker import Backoff, Breaker, BreakerState
from aggregator.worker.commit import Committer
from aggregator.worker.egress import refresh_refused
from aggregator.worker.lease import Lease, mark, release
from aggregator.worker.metrics import WorkerMetrics
from connectors import BankProtocolError, BankUnavailable, EgressRefused, GrantRevoked, TokenSet
from vault import WrappedKey

log = logging.getLogger(__name__)
_credentials = table_of(Credential)
_connections = table_of(Connection)

#: Fault injection for the crash tests: ``point:n`` SIGKILLs the process the n-th time
#: it passes ``point``: ``after_lease`` (a batch leased and marked in flight, nothing
#: sent), ``after_mark`` (one credential about to be sent), ``after_bank`` (the bank
#: answered, nothing committed), ``before_commit`` (a batch of rotations written, its
#: transaction not committed), ``after_commit`` (one credential's tokens committed).
#: Never set in production.
CRASH_ENV = "AGGREGATOR_WORKER_CRASH_AT"
#: The longest a refresh waits for earlier answers' commit (commit_before_send).
COMMIT_FIRST_WAIT = 0.5


class CrashPoints:
    """Counts passes through named points and kills the process at the configured one."""

    def __init__(self, spec: str | None) -> None:
        self._point, self._at = None, 0
        if spec:
            point, _, count = spec.partition(":")
            self._point, self._at = point, int(count or "1")
        self._seen = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CrashPoints:
        return cls((os.environ if environ is None else environ).get(CRASH_ENV))

    def reached(self, point: str) -> None:
        if point != self._point:
            return
        self._seen += 1
        if self._seen >= self._at:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class RefreshContext:
    """What every refresh of one worker process shares."""

    router: RegionRouter
    custody: Mapping[str, RegionCustody]
    banks: BankDirectory
    metrics: WorkerMetrics
    owner: str
    max_interval: timedelta
    per_bank: int = 8
    backoff: Backoff = field(default_factory=Backoff)
    breaker_threshold: int = 5
    breaker_cool_down: float = 10.0
    crash: CrashPoints = field(default_factory=lambda: CrashPoints(None))
    rng: random.Random = field(default_factory=random.SystemRandom)
    breakers: dict[str, Breaker] = field(default_factory=dict)
    gates: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    calling: dict[str, int] = field(default_factory=dict)  # holding the bank's gate
    queued: dict[str, int] = field(default_factory=dict)  # leased, not yet finished
    #: Hold a new refresh back while answered rotations wait for their commit (at most
    #: :data:`COMMIT_FIRST_WAIT`): the commit then gets the event loop before new
    #: answers compete with it, which keeps the answered-but-uncommitted window short.
    commit_before_send: bool = False
    #: Per leased credential, the monotonic time its lease surely lasts until (the
    #: Worker sets it at lease time and moves it at each heartbeat). A refresh is never
    #: sent within :attr:`lease_margin` of it: after that another worker may take the
    #: row over and present the same refresh token, which a strict bank answers by
    #: revoking the grant (unseen by either worker). Absent: not checked.
    lease_deadlines: dict[str, float] = field(default_factory=dict)
    lease_margin: float = 1.0
    #: The process-wide bound on bank calls in flight (set by the Worker; None: none).
    slots: asyncio.Semaphore | None = None
    #: Refreshes waiting for a slot: nothing sent yet (shutdown hands them back).
    waiting: set[asyncio.Task[object]] = field(default_factory=set)
    #: Where each refresh's outcome, latency and attempt go (docs/architecture.md,
    #: "Bank health"); None: not recorded.
    recorder: CallRecorder | None = None
    committer: Committer = field(init=False)

    def __post_init__(self) -> None:
        self.committer = Committer(
            self.router, self.custody, max_interval=self.max_interval,
            before_commit=lambda: self.crash.reached("before_commit"),
            on_commit=self.metrics.committed_batch,
        )

    def breaker(self, bank: str) -> Breaker:
        found = self.breakers.get(bank)
        if found is None:
            found = self.breakers[bank] = Breaker(self.breaker_threshold, self.breaker_cool_down)
        return found

    def gate(self, bank: str) -> asyncio.Semaphore:
        found = self.gates.get(bank)
        if found is None:
            found = self.gates[bank] = asyncio.Semaphore(self.per_bank)
        return found

    def unavailable_banks(self) -> set[str]:
        """Banks not to lease for now: breaker open (or its probe taken), or as many of
        its credentials in work as it may have calls in flight and, while closed, as
        many again waiting (leased ahead, so a slot never waits for a lease query)."""
        out = set()
        for bank, breaker in self.breakers.items():
            allowance = breaker.allowance(self.per_bank)
            ahead = self.per_bank if allowance == self.per_bank else 0
            if self.queued.get(bank, 0) >= allowance + ahead:
                out.add(bank)
        return out


@dataclass(slots=True)
class _Timing:
    """What one refresh's call took: seconds if it was sent, the connector error's code."""

    seconds: float | None = None
    error_code: str | None = None


class _Slot:
    """One refresh's place: a process-wide slot, then the bank's gate. The gate goes as
    soon as the bank answered (the next call to that bank may leave while this one
    commits); the process-wide slot is held until the commit, so no more than
    ``concurrency`` answered refreshes are ever uncommitted (what a crash can lose)."""

    def __init__(self, ctx: RefreshContext, bank: str) -> None:
        self._ctx, self._bank = ctx, bank
        self._global = self._gate = False

    async def acquire(self) -> None:
        ctx = self._ctx
        if ctx.slots is not None:
            await ctx.slots.acquire()
            self._global = True
        await ctx.gate(self._bank).acquire()
        self._gate = True
        ctx.calling[self._bank] = ctx.calling.get(self._bank, 0) + 1

    def release_gate(self) -> None:
        ctx = self._ctx
        if self._gate:
            self._gate = False
            ctx.calling[self._bank] -= 1
            ctx.gate(self._bank).release()

    def release(self) -> None:
        ctx = self._ctx
        self.release_gate()
        if self._global and ctx.slots is not None:
            self._global = False
            ctx.slots.release()


async def on_reauth_required(
    session: AsyncSession, connection_id: ConnectionId, *, reason: str
) -> None:
    """Record that only the user can revive the connection, in the caller's transaction
    (:func:`aggregator.reauth.require_reauth`: status, audit and one event)."""
    await require_reauth(session, connection_id, reason=reason, actor="worker")


async def refresh_leased(ctx: RefreshContext, region: str, lease: Lease) -> str:
    """Refresh one leased credential; returns the outcome (a :data:`metrics.OUTCOMES`)."""
    bank = lease.bank_id
    breaker = ctx.breaker(bank)
    slot = _Slot(ctx, bank)
    timing = _Timing()
    task: asyncio.Task[object] | None = asyncio.current_task()
    ctx.queued[bank] = ctx.queued.get(bank, 0) + 1
    try:
        if task is not None:
            ctx.waiting.add(task)
        try:
            await slot.acquire()
        except asyncio.CancelledError:
            slot.release()
            # Never sent: the row goes back as it was leased (a dead worker's mark stays).
            await asyncio.shield(release(
                ctx.router, region, lease.credential.id, lease.claimed, due_at=utcnow(),
                keep_in_flight=lease.in_flight_before, failed=False))
            raise
        finally:
            if task is not None:
                ctx.waiting.discard(task)
        if breaker.state is not BreakerState.CLOSED and not breaker.begin_probe():
            wait = max(breaker.reopens_in(), ctx.breaker_cool_down / 4)
            await release(ctx.router, region, lease.credential.id, lease.claimed,
                          due_at=utcnow() + timedelta(seconds=wait * ctx.rng.uniform(1, 1.5)),
                          keep_in_flight=lease.in_flight_before, failed=False)
            return _done(ctx, bank, "breaker_open", lease, region, timing)
        outcome = await _call(ctx, region, lease, breaker, slot, timing)
    finally:
        slot.release()
        ctx.queued[bank] -= 1
    return _done(ctx, bank, outcome, lease, region, timing)


def _done(ctx: RefreshContext, bank: str, outcome: str, lease: Lease | None = None,
          region: str | None = None, timing: _Timing | None = None) -> str:
    ctx.metrics.outcome(bank, outcome)
    if ctx.recorder is not None and lease is not None and region is not None:
        _record(ctx.recorder, ctx.owner, region, lease, outcome, timing or _Timing())
    if lease is not None:
        # One line per refresh (docs/operations.md, "What runs"): ids, bank, outcome.
        log.log(logging.INFO if outcome == "ok" else logging.WARNING,
                "refresh of %s at %s: %s", lease.credential.connection_id, bank, outcome,
                extra={"fields": {"credential_id": lease.credential.id,
                                  "connection_id": lease.credential.connection_id,
                                  "bank": bank, "outcome": outcome}})
    ctx.metrics.breaker.labels(bank).set(ctx.breaker(bank).state.value)
    return outcome


def _record(recorder: CallRecorder, owner: str, region: str, lease: Lease, outcome: str,
            timing: _Timing) -> None:
    """In memory only: the recorder writes in batches (no database write per refresh).
    A refresh that never left (breaker open, lease lost before sending) is no attempt."""
    credential = lease.credential
    if timing.seconds is None:
        return
    if outcome != "egress_refused":  # our policy refused it: the bank saw nothing
        recorder.call(region, lease.bank_id, "refresh", outcome, timing.seconds)
    recorder.attempt(region, connection_id=credential.connection_id,
                     user_id=credential.user_id, bank_id=lease.bank_id, outcome=outcome,
                     error_code=timing.error_code, worker=owner)


async def _call(
    ctx: RefreshContext, region: str, lease: Lease, breaker: Breaker, slot: _Slot,
    timing: _Timing,
) -> str:
    custody = ctx.custody[region]
    credential = lease.credential
    key, claimed = lease.key, lease.claimed  # type: WrappedKey | None, int | None
    if key is None or not lease.marked:
        # The lease did not do it: one transaction loads the data key (DataKeyDestroyed
        # if the user was erased) and commits the in-flight mark.
        async with ctx.router.session(region) as session, session.begin():
            key = await custody.data_keys.load(session, credential.user_id)
            if not lease.marked:
                claimed = await mark(session, lease, now=utcnow())
    if claimed is None:
        return "lease_lost"
    refresh_token = await custody.sealer.open_from(key, credential, "refresh_token_sealed")
    dpop_key = await open_dpop_key(custody, key, credential)
    ctx.crash.reached("after_mark")
    sent = False
    started = time.perf_counter()
    try:
        if refresh_token is None:
            raise GrantRevoked(f"{lease.bank_id}: the grant holds no refresh token")
        if ctx.commit_before_send:
            await ctx.committer.settled(COMMIT_FIRST_WAIT)
        deadline = ctx.lease_deadlines.get(credential.id)
        if deadline is not None and time.monotonic() > deadline - ctx.lease_margin:
            log.warning("credential %s: lease about to lapse before sending; handed back",
                        credential.id)
            await release(ctx.router, region, credential.id, claimed, due_at=utcnow(),
                          keep_in_flight=lease.in_flight_before, failed=False)
            return "lease_lost"
        sent = True
        tokens = await ctx.banks.oauth(lease.bank_id).refresh(refresh_token, dpop_key=dpop_key)
    except GrantRevoked as exc:
        timing.error_code = exc.code
        breaker.success()  # the bank answered properly: it is up
        return await _grant_refused(ctx, region, lease, claimed)
    except EgressRefused as exc:  # our policy, not the bank: aggregator.worker.egress
        timing.error_code = exc.code
        return await refresh_refused(ctx, region, lease, claimed)
    except BankUnavailable as exc:
        timing.error_code = exc.code
        return await _back_off(ctx, region, lease, claimed, breaker, exc.retry_after,
                               maybe_sent=_maybe_rotated(exc), outcome=_unavailable(exc))
    except BankProtocolError as exc:
        timing.error_code = exc.code
        return await _back_off(ctx, region, lease, claimed, breaker, None,
                               maybe_sent=True, outcome="protocol_error")
    except BaseException:
        # Cancelled (shutdown) or a bug: hand the row back, still marked if it left.
        await asyncio.shield(_hand_back(
            ctx, region, lease, claimed, due_at=utcnow(), maybe_sent=sent, failed=False,
            keep_in_flight=sent or lease.in_flight_before))
        raise
    finally:
        elapsed = time.perf_counter() - started
        ctx.metrics.latency.labels(lease.bank_id).observe(elapsed)
        if sent:
            timing.seconds = elapsed
    slot.release_gate()  # the bank answered: its next call may go while this one commits
    answered = time.perf_counter()
    ctx.crash.reached("after_bank")
    outcome = await _persist(ctx, region, lease, claimed, tokens, key, breaker)
    ctx.metrics.uncommitted.observe(time.perf_counter() - answered)
    return outcome


async def _persist(
    ctx: RefreshContext, region: str, lease: Lease, claimed: int, tokens: TokenSet,
    key: WrappedKey, breaker: Breaker,
) -> str:
    breaker.success()
    if not await ctx.committer.persist(region, Rotation(lease.credential, claimed, tokens, key,
                                                      refresh_policy(ctx.banks, lease.bank_id))):
        return "lease_lost"
    ctx.crash.reached("after_commit")
    return "ok"


def _unavailable(exc: BankUnavailable) -> str:
    return "rate_limited" if exc.retry_after is not None else "unavailable"


def _maybe_rotated(exc: BankUnavailable) -> bool:
    """Whether the bank may have processed the request although we saw no answer."""
    if exc.retry_after is not None:
        return False  # an answer (429/503 with Retry-After): nothing was rotated
    cause = exc.__cause__
    if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout):
        return False  # never reached the bank
    return isinstance(cause, httpx.TimeoutException | httpx.NetworkError)


async def _back_off(
    ctx: RefreshContext, region: str, lease: Lease, claimed: int, breaker: Breaker,
    retry_after: float | None, *, maybe_sent: bool, outcome: str,
) -> str:
    breaker.failure(retry_after)
    attempts = lease.credential.attempts + 1
    delay = ctx.backoff.delay(attempts, retry_after, ctx.rng)
    due = utcnow() + timedelta(seconds=delay)
    await asyncio.shield(_hand_back(ctx, region, lease, claimed, due_at=due,
                                    maybe_sent=maybe_sent, failed=True,
                                    keep_in_flight=maybe_sent))
    return outcome


async def _hand_back(
    ctx: RefreshContext, region: str, lease: Lease, claimed: int, *, due_at: datetime,
    maybe_sent: bool, failed: bool, keep_in_flight: bool,
) -> None:
    """End the lease without tokens. When the request may have reached the bank and the
    row is no longer ours (our lease lapsed and another worker took it), our late
    presentation may have revoked the grant under the new holder's feet: :func:`reverify`."""
    released = await release(ctx.router, region, lease.credential.id, claimed, due_at=due_at,
                             keep_in_flight=keep_in_flight, failed=failed)
    if not released and maybe_sent:
        await reverify(ctx, region, lease)


async def _grant_refused(ctx: RefreshContext, region: str, lease: Lease, claimed: int) -> str:
    """``invalid_grant``: flag the connection if the row is still ours, else have the
    row's current tokens verified (:func:`reverify`): the module doc's resolution rule."""
    c = _credentials.c
    async with ctx.router.session(region) as session, session.begin():
        moved = await session.execute(
            update(_credentials).where(c.id == lease.credential.id, c.version == claimed).values(
                lease_owner=None, lease_expires_at=None, refresh_started_at=None,
                refresh_due_at=None, version=claimed + 1, updated_at=utcnow(),
            )
        )
        if getattr(moved, "rowcount", 0) == 1:
            # Still at our version: nobody stored tokens since we claimed it, so the token
            # we presented was the row's newest and the bank refused it: the grant is dead.
            reason = "invalid_grant_after_crash" if lease.in_flight_before else "invalid_grant"
            await on_reauth_required(session, lease.credential.connection_id, reason=reason)
            return "invalid_grant"
    return await reverify(ctx, region, lease)


async def reverify(ctx: RefreshContext, region: str, lease: Lease) -> str:
    """Our request presented a refresh token after the row left our hands: make the row
    prove its current tokens before anyone trusts them (the module doc's rule).

    The row's version moves (so a commit or release still pending under an older claim,
    ours or the current holder's, is refused), its owner is cleared (no heartbeat extends
    it; its lease still runs to its end, so the holder's own guard keeps it from sending
    after that), and it is marked in flight and due now: its next lessee presents the
    stored refresh token once, and stores the answer or flags the connection. Only rows
    of ``active`` connections; returns ``"reverify"``, or ``"resolved_elsewhere"`` when
    the credential is gone or its connection is already flagged.
    """
    c, k = _credentials.c, _connections.c
    now = utcnow()
    async with ctx.router.session(region) as session, session.begin():
        moved = await session.execute(
            update(_credentials)
            .where(c.id == lease.credential.id, c.connection_id.in_(
                select(k.id).where(k.status == ConnectionStatus.ACTIVE)))
            .values(lease_owner=None, refresh_started_at=now, refresh_due_at=now,
                    version=c.version + 1, updated_at=now)
        )
    if getattr(moved, "rowcount", 0) != 1:
        return "resolved_elsewhere"
    log.warning("credential %s: a refresh token went to the bank after the lease was lost; "
                "its current tokens will be verified", lease.credential.id)
    return "reverify"
