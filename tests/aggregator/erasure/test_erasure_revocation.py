"""Concurrent revocation at real sandbox banks on loopback: the bounds hold, failures retry.

Each bank is a :class:`~aggregator.sandbox.SandboxBank` served by uvicorn from its own
thread; :class:`RevokeGate` sits in front of their ``/revoke`` endpoints and counts the
requests in flight, per bank and over all of them. It holds each request until as many
are in flight as the bound allows (or every request still unanswered is), so a
concurrent job reaches its bound whatever the scheduling, and a sequential one never
gets past one: the counts, not the clock, are asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from aggregator.custody import RegionCustody
from aggregator.erasure import ErasureConfig, ErasureJob, request_erasure, retry_failed
from aggregator.ids import ApplicationId, new_id
from aggregator.models import (
    Connection,
    ConnectionStatus,
    Credential,
    ErasureRevocation,
    ErasureState,
    RevocationOutcome,
    User,
)
from aggregator.models.base import utcnow
from aggregator.sandbox import DEV_CLIENT_ID, SandboxBank, SandboxConfig
from aggregator.sandbox.store import IssuedTokens
from aggregator.sandbox.testing import sandbox_profile
from aggregator.store import RegionRouter
from aggregator.sync import BankDirectory
from aggregator.users import create_user
from connectors import EgressPolicy, load_profiles

#: How long the gate holds a request at most when the bound is never reached (a
#: sequential job): shorter than the client's timeout, so such a job fails on the count.
HOLD_AT_MOST = 3.0


@dataclass
class RevokeGate:
    """Counts ``/revoke`` requests in flight at every bank it fronts; answers 503
    (RFC 7009 §2.2.1: the server is temporarily unavailable) while ``down``."""

    expected: int  # revocation requests the test will send
    release_at: int  # in flight at once before the gate lets them through
    down: bool = False
    in_flight: int = 0
    answered: int = 0
    peak: int = 0
    bank_in_flight: dict[str, int] = field(default_factory=dict)
    bank_peak: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, bank_id: str, app: ASGIApp) -> ASGIApp:
        async def gated(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] != "/revoke":
                await app(scope, receive, send)
                return
            self._enter(bank_id)
            try:
                if self.down:
                    await _unavailable(send)
                    return
                await self._hold()
                await app(scope, receive, send)
            finally:
                self._leave(bank_id)

        return gated

    def _enter(self, bank_id: str) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            now = self.bank_in_flight.get(bank_id, 0) + 1
            self.bank_in_flight[bank_id] = now
            self.bank_peak[bank_id] = max(self.bank_peak.get(bank_id, 0), now)

    def _leave(self, bank_id: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.answered += 1
            self.bank_in_flight[bank_id] -= 1

    async def _hold(self) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + HOLD_AT_MOST
        while loop.time() < until:
            with self._lock:
                if self.in_flight >= min(self.release_at, self.expected - self.answered):
                    return
            await asyncio.sleep(0.005)


async def _unavailable(send: Send) -> None:
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"error":"temporarily_unavailable"}'})


@dataclass
class Banks:
    gate: RevokeGate
    sandboxes: dict[str, SandboxBank]
    directory: BankDirectory

    def revoked(self) -> int:
        """Grants the banks have revoked (a refresh token's revocation ends its grant)."""
        return sum(1 for bank in self.sandboxes.values()
                   for grant in bank.store._grants.values() if grant.revoked)


BanksFactory = Callable[..., Awaitable[Banks]]


@pytest.fixture
async def make_banks(tmp_path: Path) -> AsyncIterator[BanksFactory]:
    """``await make_banks(["a", "b"], gate)``: sandbox banks behind ``gate`` on loopback,
    and the gateway's directory of them."""
    with contextlib.ExitStack() as stack:
        async with httpx.AsyncClient() as http:
            directories: list[BankDirectory] = []

            async def make(bank_ids: list[str], gate: RevokeGate) -> Banks:
                sandboxes: dict[str, SandboxBank] = {}
                for bank_id in bank_ids:
                    sandbox = SandboxBank(SandboxConfig())
                    sandbox.asgi_app = gate.wrap(bank_id, sandbox.asgi_app)  # type: ignore[assignment]
                    url = stack.enter_context(sandbox.serve_in_thread())
                    (tmp_path / f"{bank_id}.toml").write_text(sandbox_profile(bank_id, url))
                    sandboxes[bank_id] = sandbox
                directory = BankDirectory(load_profiles([tmp_path]), http, environ={},
                                          policy=EgressPolicy(allow_http_loopback=True))
                directories.append(directory)
                return Banks(gate, sandboxes, directory)

            yield make
            for directory in directories:
                await directory.aclose()


async def _user_with_grants(router: RegionRouter, custody: RegionCustody,
                            app_id: ApplicationId, banks: Banks, per_bank: int) -> str:
    """A user with ``per_bank`` active connections at every bank, holding live tokens
    the sandbox issued (sealed as the Link flow stores them)."""
    async with router.session(custody.region) as session, session.begin():
        user = await create_user(session, custody, app_id, f"u-{secrets.token_hex(4)}")
        key = await custody.data_keys.load(session, user.id)
        for bank_id, sandbox in banks.sandboxes.items():
            for _ in range(per_bank):
                access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
                sandbox.store.save_tokens(
                    IssuedTokens(DEV_CLIENT_ID, "alice", "accounts", access, refresh, 300))
                connection = Connection(id=new_id("con", custody.region), user_id=user.id,
                                        application_id=app_id, bank_id=bank_id,
                                        status=ConnectionStatus.ACTIVE)
                credential = Credential(id=new_id("crd", custody.region),
                                        connection_id=connection.id, user_id=user.id,
                                        access_expires_at=utcnow() + timedelta(minutes=5),
                                        refresh_due_at=utcnow() + timedelta(minutes=4))
                await custody.sealer.seal_into(key, credential, "access_token_sealed", access,
                                               session=session)
                await custody.sealer.seal_into(key, credential, "refresh_token_sealed",
                                               refresh, session=session)
                session.add_all([connection, credential])
    return user.id


async def _erase(router: RegionRouter, custody: dict[str, RegionCustody],
                 app_id: ApplicationId, banks: Banks, user_id: str,
                 config: ErasureConfig) -> str:
    request = await request_erasure(router, custody["eu"], user_id, app_id, config=config,
                                    actor=app_id)
    assert request is not None
    job = ErasureJob(router, custody, banks.directory, config)
    assert await job.run(request.id) is ErasureState.COMPLETED
    return request.id


async def _revocations(router: RegionRouter, request_id: str) -> list[ErasureRevocation]:
    async with router.reader("eu") as session:
        return list((await session.execute(select(ErasureRevocation).where(
            ErasureRevocation.request_id == request_id).order_by(ErasureRevocation.n)
        )).scalars())


@pytest.mark.parametrize(("bank_count", "grants_each", "per_bank", "total"), [
    (1, 5, 2, 16),  # one bank: its own bound binds
    (3, 2, 2, 3),  # three banks: the overall bound binds
])
async def test_grants_are_revoked_concurrently_within_the_per_bank_and_overall_bounds(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_banks: BanksFactory, bank_count: int, grants_each: int, per_bank: int, total: int,
) -> None:
    grants = bank_count * grants_each
    bound = min(total, per_bank * bank_count)
    gate = RevokeGate(expected=grants, release_at=bound)
    banks = await make_banks([f"bank{i}" for i in range(bank_count)], gate)
    user_id = await _user_with_grants(region_router, custody["eu"], app_id, banks,
                                      grants_each)
    config = ErasureConfig(revoke_attempts=1, revoke_backoff=0.0, revoke_per_bank=per_bank,
                           revoke_concurrency=total)

    request_id = await _erase(region_router, custody, app_id, banks, user_id, config)

    assert gate.peak == bound  # concurrent, up to the bound and never past it
    assert max(gate.bank_peak.values()) <= per_bank
    assert gate.answered == grants
    assert [r.outcome for r in await _revocations(region_router, request_id)] == [
        RevocationOutcome.REVOKED] * grants
    assert banks.revoked() == grants
    async with region_router.reader("eu") as session:  # revoked first, then shredded
        assert await session.get(User, user_id) is None


async def test_failed_revocations_are_recorded_each_and_retried_within_the_bound(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_banks: BanksFactory,
) -> None:
    gate = RevokeGate(expected=4, release_at=2, down=True)
    banks = await make_banks(["flaky"], gate)
    user_id = await _user_with_grants(region_router, custody["eu"], app_id, banks, 4)
    config = ErasureConfig(revoke_attempts=2, revoke_backoff=0.0, revoke_per_bank=2)

    request_id = await _erase(region_router, custody, app_id, banks, user_id, config)

    failed = await _revocations(region_router, request_id)
    assert [(r.outcome, r.attempts, r.last_error) for r in failed] == [
        (RevocationOutcome.FAILED, 2, "bank_unavailable")] * 4
    assert all(r.token_escrow is not None for r in failed)  # kept for the retry
    assert gate.bank_peak["flaky"] <= 2
    assert banks.revoked() == 0

    gate.down, gate.answered, gate.peak = False, 0, 0
    outcomes = await retry_failed(region_router, custody["eu"], banks.directory, request_id,
                                  config=config)

    assert outcomes == [RevocationOutcome.REVOKED] * 4
    assert gate.peak == 2
    retried = await _revocations(region_router, request_id)
    assert [(r.outcome, r.attempts, r.token_escrow) for r in retried] == [
        (RevocationOutcome.REVOKED, 3, None)] * 4
    assert banks.revoked() == 4
