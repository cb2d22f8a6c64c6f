"""Sandbox banks on loopback, linked credentials in bulk, and worker processes to run.

Credentials carry real tokens issued by the sandbox bank's token store (its Python API),
sealed through the custody sealer exactly as the Link flow stores them; the workers
then refresh them over HTTP against the same bank, which rotates refresh tokens and
revokes a grant whose used refresh token is presented again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aggregator.custody import RegionCustody
from aggregator.ids import ApplicationId, new_id
from aggregator.models import Connection, ConnectionStatus, Credential, SyncState
from aggregator.models.base import utcnow
from aggregator.sandbox import DEV_CLIENT_ID, SandboxBank, SandboxConfig
from aggregator.sandbox.store import IssuedTokens
from aggregator.sandbox.testing import sandbox_profile
from aggregator.settings import Settings
from aggregator.store import RegionRouter
from aggregator.users import create_user
from vault import LocalKeyringConfig

ROOT = Path(__file__).resolve().parents[3]


class TokenRequests:
    """ASGI wrapper counting the token requests the bank answered.

    A request counts when its response starts: the bank has acted on it (rotated,
    refused, or turned it away with a fault). One whose client vanished before its body
    arrived (a worker killed mid-request, in the crash tests) was never acted on and
    does not count.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0
        self.ok = 0  # of which answered 2xx (a token issued)
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/token":
            await self.app(scope, receive, send)
            return

        cut = False

        async def receiving() -> Message:
            nonlocal cut
            message = await receive()
            cut = cut or message["type"] == "http.disconnect"
            return message

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start" and not cut:
                with self._lock:
                    self.count += 1
                    self.ok += 200 <= message["status"] < 300
            await send(message)

        await self.app(scope, receiving, counted)


@dataclass
class Bank:
    bank_id: str
    sandbox: SandboxBank
    url: str
    requests: TokenRequests


@contextlib.contextmanager
def serve_banks(*bank_ids: str, access_token_ttl: int = 300) -> Iterator[dict[str, Bank]]:
    """One sandbox bank per id, each served from its own thread on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        out: dict[str, Bank] = {}
        for bank_id in bank_ids:
            sandbox = SandboxBank(SandboxConfig(access_token_ttl=access_token_ttl))
            counter = TokenRequests(sandbox.asgi_app)
            sandbox.asgi_app = counter  # type: ignore[assignment]
            url = stack.enter_context(sandbox.serve_in_thread())
            out[bank_id] = Bank(bank_id, sandbox, url, counter)
        yield out


def write_config(tmp_path: Path, settings: Settings, banks: dict[str, Bank]) -> Path:
    """A settings file naming the test databases, keyring and bank profiles."""
    profiles = tmp_path / "banks"
    profiles.mkdir(exist_ok=True)
    for bank in banks.values():
        (profiles / f"{bank.bank_id}.toml").write_text(sandbox_profile(bank.bank_id, bank.url))
    # The test banks answer on 127.0.0.1: the egress policy's development opt-in.
    lines = [f'data_dir = "{tmp_path}"', "[egress]", "allow_http_loopback = true",
             "[banks]", f'directories = ["{profiles}"]']
    for name, region in settings.regions.items():
        keys = region.keys
        assert isinstance(keys, LocalKeyringConfig)
        lines += [f"[regions.{name}]", f'database_url = "{region.database_url}"',
                  f"[regions.{name}.keys]", 'provider = "local"',
                  f'directory = "{keys.directory}"', f'kek_id = "{keys.kek_id}"']
    path = tmp_path / "worker.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def link_many(
    router: RegionRouter, custody: RegionCustody, app_id: ApplicationId, bank: Bank, n: int,
    *, users: int = 10, due_in: float = -1.0, synced: bool = False,
) -> list[str]:
    """``n`` active connections at ``bank`` holding real tokens, due ``due_in`` s from now.

    ``synced`` records a sync just now, so the workers' scheduled sync leaves them alone
    (tests of refreshing alone, where thousands of syncs would only add noise).
    """
    ttl = bank.sandbox.config.access_token_ttl
    ids: list[str] = []
    per_user = -(-n // users)
    async with router.session(custody.region) as session, session.begin():
        for u in range(users):
            user = await create_user(session, custody, app_id,
                                     f"{bank.bank_id}-{u}-{secrets.token_hex(4)}@example.test")
            key = await custody.data_keys.load(session, user.id)
            for _ in range(min(per_user, n - len(ids))):
                access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
                bank.sandbox.store.save_tokens(
                    IssuedTokens(DEV_CLIENT_ID, "alice", "accounts", access, refresh, ttl))
                now = utcnow()
                connection = Connection(
                    id=new_id("con", custody.region), user_id=user.id, application_id=app_id,
                    bank_id=bank.bank_id, status=ConnectionStatus.ACTIVE,
                )
                credential = Credential(
                    id=new_id("crd", custody.region), connection_id=connection.id,
                    user_id=user.id, access_expires_at=now + timedelta(seconds=ttl),
                    refresh_due_at=now + timedelta(seconds=due_in),
                )
                await custody.sealer.seal_into(key, credential, "access_token_sealed", access,
                                               session=session)
                await custody.sealer.seal_into(key, credential, "refresh_token_sealed", refresh,
                                               session=session)
                session.add_all([connection, credential])
                if synced:
                    session.add(SyncState(connection_id=connection.id, user_id=user.id,
                                          last_synced_at=now))
                ids.append(credential.id)
    return ids


@dataclass
class CredentialState:
    id: str
    bank_id: str
    status: ConnectionStatus
    refresh_live: bool  # the stored refresh token is the bank's current one
    rotated: bool  # the stored access token is no longer the one first issued
    leased: bool
    in_flight: bool
    version: int


async def states(
    router: RegionRouter, custody: RegionCustody, banks: dict[str, Bank],
    first_access: dict[str, str] | None = None,
) -> dict[str, CredentialState]:
    async with router.reader(custody.region) as session:
        rows = (await session.execute(
            select(Credential, Connection).join(Connection,
                                                Connection.id == Credential.connection_id)
        )).all()
        keys = {u: await custody.data_keys.load(session, u) for u in {r[0].user_id for r in rows}}
    out: dict[str, CredentialState] = {}
    for credential, connection in rows:
        key = keys[credential.user_id]
        refresh = await custody.sealer.open_from(key, credential, "refresh_token_sealed")
        access = await custody.sealer.open_from(key, credential, "access_token_sealed")
        store = banks[connection.bank_id].sandbox.store
        live = refresh is not None and _live(store, refresh)
        out[credential.id] = CredentialState(
            credential.id, connection.bank_id, connection.status, live,
            first_access is not None and access != first_access.get(credential.id),
            credential.lease_owner is not None, credential.refresh_started_at is not None,
            credential.version,
        )
    return out


def revoked_grants(bank: Bank) -> int:
    """How many grants the bank revoked (reuse detection, or an explicit revocation)."""
    grants = bank.sandbox.store._grants
    return sum(1 for grant in grants.values() if grant.revoked)


def _live(store: object, refresh: str) -> bool:
    # Read-only look at the sandbox's state: find_refresh would revoke on a used token.
    from aggregator.sandbox.models import digest

    lookup = store._by_refresh  # type: ignore[attr-defined]
    tokens = store._tokens  # type: ignore[attr-defined]
    grants = store._grants  # type: ignore[attr-defined]
    token_id = lookup.get(digest(refresh))
    if token_id is None:
        return False
    record = tokens[token_id]
    return bool(record.refresh_state == "active" and not grants[record.grant_id].revoked)


async def first_access_tokens(
    router: RegionRouter, custody: RegionCustody
) -> dict[str, str]:
    async with router.reader(custody.region) as session:
        rows = (await session.execute(select(Credential))).scalars().all()
        out: dict[str, str] = {}
        for credential in rows:
            key = await custody.data_keys.load(session, credential.user_id)
            out[credential.id] = await custody.sealer.open_from(
                key, credential, "access_token_sealed") or ""
    return out


@dataclass
class Workers:
    """Worker OS processes; every one is reaped when the block ends, whatever happens."""

    config: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, *args: str, env: dict[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "aggregator.worker", "--config", str(self.config),
                   "--poll-seconds", "0.2", "--log-level", "warning", *args]
        with open(log or os.devnull, "ab") as out:  # the child keeps its own copy
            proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})},
                                    stdout=out, stderr=out)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


async def wait_for(
    check: Callable[[], Awaitable[bool]], seconds: float, every: float = 0.25
) -> bool:
    """Poll ``check`` until true or ``seconds`` pass; bounded in time and count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return await check()


def alive(procs: Sequence[subprocess.Popen[bytes]]) -> list[bool]:
    return [p.poll() is None for p in procs]
