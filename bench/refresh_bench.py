"""Token refresh: the workers against a bank of known capacity, a naive peer, lease cost.

Setup: a throw-away PostgreSQL database (unique name, dropped at the end), one region,
the sandbox bank in its own process (own core, own GIL), credentials holding real
tokens the bank issued, sealed through the custody sealer.

The bank's capacity is set by construction: its token endpoint admits at most
``--admit`` requests at once and holds each for ``--latency`` seconds before answering
(a bank's rate limit and its processing time), so it can serve at most
``admit / latency`` refreshes per second. That figure is verified in the same run by
Debian's ``wrk`` (C, keep-alive, ``2 * admit`` connections, its CPU printed) posting
refresh grants through the same gate; the verified rate is the limit.

(a) the workers end to end: ``--workers`` ``aggregator worker`` processes at
    ``--concurrency`` each, refreshing every due credential (lease, unseal, in-flight
    mark, refresh, seal, commit); ratio to the verified capacity;
(b) the naive peer at the same concurrency: authlib's ``AsyncOAuth2Client`` refreshing
    ``workers * concurrency`` rotating chains under ``asyncio.gather``, no database;
(c) peak RSS of the worker processes themselves (``VmHWM`` of each, the largest).

Then the scale check: the median time of one lease batch (32 rows, lease + commit) with
10,000 and with 1,000,000 credentials in the table (1,000 due), and the plan of the lease
query. Prints ``RESULT refresh_vs_bank_capacity=… refresh_vs_naive=…
bank_capacity_verified_vs_constructed=… lease_cost_1m_vs_10k=… peak_rss_mb=…``.

    .venv/bin/python bench/refresh_bench.py            # full run
    .venv/bin/python bench/refresh_bench.py --quick    # proves it works
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import psycopg
from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from starlette.requests import ClientDisconnect

from aggregator.applications import create_application
from aggregator.custody import RegionCustody, region_custody
from aggregator.datakeys import SealLedger
from aggregator.ids import ApplicationId, new_id
from aggregator.models import Connection, ConnectionStatus, Credential, SyncState
from aggregator.sandbox import DEV_CLIENT_ID, DEV_CLIENT_SECRET, SandboxBank, SandboxConfig
from aggregator.sandbox.store import IssuedTokens
from aggregator.sandbox.testing import sandbox_profile
from aggregator.settings import RegionSettings, Settings
from aggregator.store import RegionRouter, upgrade
from aggregator.users import create_user
from aggregator.worker.lease import lease_batch, lease_query
from vault import Envelope, LocalKeyringConfig, open_provider

ROOT = Path(__file__).resolve().parents[1]
TTL = 3600
BANK = "bench-bank"


# -- the bank, in its own process ------------------------------------------------------

class Admission:
    """ASGI gate of the token endpoint: ``limit`` requests at once, each held ``latency`` s.

    Capacity by construction: at most ``limit / latency`` token answers per second.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.limit, self.latency = 0, 0.0
        self._slots: asyncio.Semaphore | None = None

    def set(self, limit: int, latency: float) -> None:
        self.limit, self.latency, self._slots = limit, latency, None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/token" or not self.limit:
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # created in the serving loop
            self._slots = asyncio.Semaphore(self.limit)
        async with self._slots:
            await asyncio.sleep(self.latency)
            with contextlib.suppress(ClientDisconnect):  # wrk stops with requests queued
                await self.app(scope, receive, send)


def _bank_main(pipe: Pipe) -> None:
    bank = SandboxBank(SandboxConfig(access_token_ttl=TTL))
    gate = Admission(bank.asgi_app)
    bank.asgi_app = gate  # type: ignore[assignment]  # served as any ASGI app
    with bank.serve_in_thread() as url:
        pipe.send(url)
        while True:
            command, arg = pipe.recv()
            if command == "issue":
                out = []
                for _ in range(arg):
                    access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
                    bank.store.save_tokens(
                        IssuedTokens(DEV_CLIENT_ID, "alice", "accounts", access, refresh, TTL))
                    out.append((access, refresh))
                pipe.send(out)
            elif command == "gate":
                gate.set(*arg)
                pipe.send(True)
            else:
                pipe.send(True)
                return


class BankProcess:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_bank_main, args=(child,), daemon=True)
        self.proc.start()
        self.url: str = self.pipe.recv()

    def call(self, command: str, arg: object = None) -> Any:
        self.pipe.send((command, arg))
        return self.pipe.recv()

    def cpu_seconds(self) -> float:
        """CPU time the bank process used so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.call("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# -- the database --------------------------------------------------------------------

def _libpq(url: str, database: str) -> str:
    return make_url(url).set(drivername="postgresql", database=database).render_as_string(
        hide_password=False)


def create_database(admin_url: str) -> tuple[str, str]:
    name = f"refresh_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_libpq(admin_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(_libpq(admin_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_config(directory: Path, url: str, bank_url: str) -> Path:
    banks = directory / "banks"
    banks.mkdir(exist_ok=True)
    (banks / f"{BANK}.toml").write_text(
        sandbox_profile(BANK, bank_url, display_name="Bench bank"))
    path = directory / "worker.toml"
    path.write_text("\n".join([
        f'data_dir = "{directory}"', "[banks]", f'directories = ["{banks}"]',
        "[regions.eu]", f'database_url = "{url}"', "[regions.eu.keys]", 'provider = "local"',
        f'directory = "{directory / "keys"}"', 'kek_id = "eu"',
        # The sandbox bank listens on 127.0.0.1: a development opt-in of the egress policy.
        "[egress]", "allow_http_loopback = true",
    ]) + "\n")
    return path


async def seed(router: RegionRouter, custody: RegionCustody, app: ApplicationId,
               tokens: list[tuple[str, str]], users: int = 50) -> None:
    """Linked credentials holding ``tokens``, all due now."""
    now = datetime.now(UTC)
    per_user = -(-len(tokens) // users)
    for start in range(0, len(tokens), per_user):
        async with router.session("eu") as session, session.begin():
            user = await create_user(session, custody, app, f"bench-{secrets.token_hex(6)}")
            key = await custody.data_keys.load(session, user.id)
            for access, refresh in tokens[start:start + per_user]:
                connection = Connection(id=new_id("con", "eu"), user_id=user.id,
                                        application_id=app, bank_id=BANK,
                                        status=ConnectionStatus.ACTIVE)
                credential = Credential(id=new_id("crd", "eu"), connection_id=connection.id,
                                        user_id=user.id, refresh_due_at=now - timedelta(seconds=1),
                                        access_expires_at=now + timedelta(seconds=TTL))
                await custody.sealer.seal_into(key, credential, "access_token_sealed", access,
                                               session=session)
                await custody.sealer.seal_into(key, credential, "refresh_token_sealed", refresh,
                                               session=session)
                # Synced just now: the workers' scheduled sync leaves them alone, so (b)
                # measures refreshing only.
                session.add_all([connection, credential, SyncState(
                    connection_id=connection.id, user_id=user.id, last_synced_at=now)])


# -- (a) raw capacity, (b) worker, (c) naive ------------------------------------------

def verify_capacity(bank: BankProcess, admit: int, seconds: int) -> tuple[float, float]:
    """The gate's rate measured by wrk (invalid grants: answered 400 after the gate), and
    wrk's CPU share of one core."""
    script = Path(tempfile.mkdtemp()) / "refresh.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        'wrk.body = "grant_type=refresh_token&refresh_token=not-issued&client_id='
        f'{DEV_CLIENT_ID}&client_secret={DEV_CLIENT_SECRET}"\n')
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(["wrk", "-t1", f"-c{2 * admit}", f"-d{seconds}s", "-s", str(script),
                          f"{bank.url}/token"], capture_output=True, text=True, check=True,
                         timeout=seconds + 30).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / wall
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(match.group(1)), cpu


async def naive(bank: BankProcess, n: int, concurrency: int) -> float:
    """authlib's client, ``concurrency`` rotating chains under ``asyncio.gather``."""
    tokens = [r for _, r in bank.call("issue", concurrency)]
    done = 0
    async with AsyncOAuth2Client(DEV_CLIENT_ID, DEV_CLIENT_SECRET, timeout=60) as client:
        async def chain(refresh: str) -> None:
            nonlocal done
            while done < n:
                done += 1
                answer = await client.refresh_token(f"{bank.url}/token",
                                                    refresh_token=refresh)
                refresh = answer["refresh_token"]

        start = time.perf_counter()
        await asyncio.gather(*(chain(t) for t in tokens))
        return done / (time.perf_counter() - start)


async def worker_rate(router: RegionRouter, config: Path, n: int, workers: int,
                      concurrency: int) -> tuple[float, float]:
    """Refreshes/s of ``workers`` processes over ``n`` due credentials; and peak RSS (MB)."""
    horizon = datetime.now(UTC) + timedelta(minutes=10)

    async def refreshed() -> int:
        async with router.reader("eu") as session:
            return int((await session.execute(select(func.count()).select_from(Credential)
                        .where(Credential.refresh_due_at > horizon))).scalar_one())

    command = [sys.executable, "-m", "aggregator.worker", "--config", str(config),
               "--concurrency", str(concurrency), "--per-bank", str(concurrency),
               "--batch", "32", "--poll-seconds", "0.1", "--log-level", "error"]
    procs = _spawn(command, workers)
    peak = 0.0
    first: tuple[float, int] | None = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            count = await refreshed()
            if first is None and count:
                first = (time.perf_counter(), count)
            peak = max([peak, *(_peak_rss_mb(p.pid) for p in procs)])
            if count >= n:
                break
            await asyncio.sleep(0.1)
        end = time.perf_counter()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    if first is None or count < n:
        raise RuntimeError(f"only {count} of {n} credentials were refreshed")
    return (n - first[1]) / max(end - first[0], 1e-6), peak


def _peak_rss_mb(pid: int) -> float:
    """A process's own peak resident set (``VmHWM``), in MB; 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _spawn(command: list[str], n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(command, cwd=ROOT) for _ in range(n)]


# -- lease cost -------------------------------------------------------------------------

def fill(libpq: str, app: str, user: str, total: int, due: int) -> None:
    """``total`` credentials straight in SQL (not due but ``due`` of them); dummy tokens."""
    with psycopg.connect(libpq, autocommit=True) as db:
        db.execute("TRUNCATE credentials, connections CASCADE")
        db.execute("""
            INSERT INTO connections (id, user_id, application_id, bank_id, status, change_seq,
                                     created_at, updated_at)
            SELECT 'con_eu_' || lpad(i::text, 26, '0'), %s, %s, %s, 'active', 0, now(), now()
            FROM generate_series(1, %s) AS i""", (user, app, BANK, total))
        db.execute("""
            INSERT INTO credentials (id, connection_id, user_id, access_token_sealed,
                                     refresh_due_at, version, attempts, updated_at)
            SELECT 'crd_eu_' || lpad(i::text, 26, '0'), 'con_eu_' || lpad(i::text, 26, '0'),
                   %s, '\\x00'::bytea,
                   CASE WHEN i <= %s THEN now() - interval '1 minute'
                        ELSE now() + (i || ' seconds')::interval END, 1, 0, now()
            FROM generate_series(1, %s) AS i""", (user, due, total))
        db.execute("VACUUM ANALYZE credentials")
        db.execute("VACUUM ANALYZE connections")


async def lease_cost(router: RegionRouter, rounds: int = 25) -> float:
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        leased = await lease_batch(router, "eu", f"bench-{i}", now=datetime.now(UTC), limit=32,
                                   lease_for=timedelta(minutes=5))
        times.append(time.perf_counter() - start)
        assert len(leased) == 32
    return statistics.median(times)


async def lease_plan(router: RegionRouter) -> str:
    query = lease_query(datetime.now(UTC), 32)
    compiled = query.compile(router.engine("eu").sync_engine,
                             compile_kwargs={"literal_binds": True})
    async with router.reader("eu") as session:
        rows = (await session.execute(text(f"EXPLAIN {compiled}"))).scalars().all()
    return "\n".join(rows)


# -- main -----------------------------------------------------------------------------

async def run(args: argparse.Namespace, url: str, directory: Path, bank: BankProcess) -> None:
    keys = LocalKeyringConfig(directory / "keys", "eu")
    settings = Settings(data_dir=directory, regions={"eu": RegionSettings("eu", url, keys)})
    router = RegionRouter(settings)
    try:
        await upgrade(router.engine("eu"))
        provider = open_provider(keys)
        provider.ensure_kek()
        ledger = SealLedger(router.engine("eu"))
        custody = await region_custody(router, "eu", Envelope(provider, seal_counter=ledger),
                                       ledger)
        app, _ = await create_application(router, "Bench", ["https://bench.test/cb"])
        config = write_config(directory, url, bank.url)
        constructed = args.admit / args.latency
        bank.call("gate", (args.admit, args.latency))
        verified, wrk_cpu = verify_capacity(bank, args.admit, args.seconds)
        print(f"bank capacity: {args.admit} admitted x 1/{args.latency:g} s = "
              f"{constructed:.0f}/s by construction; wrk measured {verified:.0f}/s "
              f"(wrk used {wrk_cpu:.0%} of one core)", flush=True)
        concurrency = args.workers * args.concurrency
        simple = await naive(bank, args.naive, concurrency)
        await seed(router, custody, app, bank.call("issue", args.credentials))
        rate, rss = await worker_rate(router, config, args.credentials, args.workers,
                                      args.concurrency)
        print(f"workers {rate:.0f}/s ({args.workers} x {args.concurrency} in flight), naive "
              f"authlib peer {simple:.0f}/s ({concurrency} in flight), workers' peak RSS "
              f"{rss:.0f} MB", flush=True)
        async with router.reader("eu") as session:
            user = (await session.execute(text("SELECT id FROM users LIMIT 1"))).scalar_one()
        libpq = _libpq(url, make_url(url).database or "")
        costs = {}
        scale = (10_000, 100_000) if args.quick else (10_000, 1_000_000)
        for total in scale:
            fill(libpq, app, user, total, due=1_000)
            costs[total] = await lease_cost(router)
            print(f"[lease] {total:>9,} rows: {costs[total] * 1000:.2f} ms per 32-row batch",
                  flush=True)
        print(f"[lease] plan at {scale[1]:,} rows:\n" + await lease_plan(router), flush=True)
        custody.close()
    finally:
        await router.dispose()
    print(
        f"RESULT refresh_vs_bank_capacity={rate / verified:.2f}"
        f" refresh_vs_naive={rate / simple:.2f}"
        f" bank_capacity_verified_vs_constructed={verified / constructed:.2f}"
        f" lease_cost_1m_vs_10k={costs[scale[1]] / costs[scale[0]]:.2f}"
        f" peak_rss_mb={rss:.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--credentials", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="per worker process")
    parser.add_argument("--admit", type=int, default=16, help="the bank's concurrent admissions")
    parser.add_argument("--latency", type=float, default=0.05, help="the bank's answer time")
    parser.add_argument("--seconds", type=int, default=5, help="wrk's verification run")
    parser.add_argument("--naive", type=int, default=3000, help="refreshes for (b)")
    parser.add_argument("--quick", action="store_true", help="1,000 credentials, short runs")
    parser.add_argument("--postgres", default=os.environ.get(
        "AGGREGATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    if args.quick:
        args.credentials, args.naive, args.seconds = 1000, 600, 2
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")
    name, url = create_database(args.postgres)
    bank = BankProcess()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(run(args, url, Path(tmp), bank))
    finally:
        bank.close()
        drop_database(args.postgres, name)


if __name__ == "__main__":
    main()
