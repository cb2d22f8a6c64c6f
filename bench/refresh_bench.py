"""Token refresh: the worker against the sandbox bank's capacity, a naive loop, lease cost.

Setup: a fresh PostgreSQL database (dropped at the end), one region, the sandbox bank in
its own process (own core, own GIL), credentials holding real tokens the bank issued,
sealed through the custody sealer. For each bank latency (50 ms, then none):

(a) the bank's raw token-endpoint capacity: direct httpx clients in the workers' layout
    (``--workers`` processes at ``--concurrency`` each, the worker's own transport), each
    request a valid refresh (rotating chains), nothing else. The bank's and the clients'
    CPU use are printed with it, to show which side set the figure (one client process
    at the total concurrency measured the client, not the bank: ~90 % of its core at
    no latency, the bank at ~20 %);
(b) the worker end to end: ``--workers`` ``aggregator worker`` processes refreshing every
    due credential (lease, unseal, in-flight mark, refresh, seal, commit);
(c) the simple alternative: a sequential loop with authlib's httpx client, no database.

Then the scale check: the median time of one lease batch (32 rows, lease + commit) with
10,000 and with 1,000,000 credentials in the table (1,000 due), and the plan of the lease
query. Prints ``RESULT refresh_vs_bank_capacity=… refresh_vs_bank_capacity_cpu=…
refresh_vs_naive=… lease_cost_1m_vs_10k=… peak_rss_mb=…`` (peak RSS of a worker process).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx
import psycopg
from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import make_url

from aggregator.applications import create_application
from aggregator.custody import RegionCustody, region_custody
from aggregator.datakeys import SealLedger
from aggregator.ids import ApplicationId, new_id
from aggregator.models import Connection, ConnectionStatus, Credential, SyncState
from aggregator.sandbox import DEV_CLIENT_ID, DEV_CLIENT_SECRET, Faults, SandboxBank, SandboxConfig
from aggregator.sandbox.store import IssuedTokens
from aggregator.sandbox.testing import sandbox_profile
from aggregator.settings import RegionSettings, Settings
from aggregator.store import RegionRouter, upgrade
from aggregator.users import create_user
from aggregator.worker.lease import lease_batch, lease_query
from connectors.egress.sharded import ShardedTransport
from vault import Envelope, LocalKeyringConfig, open_provider

ROOT = Path(__file__).resolve().parents[1]
TTL = 3600
BANK = "bench-bank"


# -- the bank, in its own process ------------------------------------------------------

def _bank_main(pipe: Pipe) -> None:
    bank = SandboxBank(SandboxConfig(access_token_ttl=TTL))
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
            elif command == "faults":
                bank.faults = arg
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

def _client_main(url: str, tokens: list[str], n: int, start_at: float, out: Any) -> None:
    """One client process of (a): ``len(tokens)`` rotating chains until ``n`` requests."""
    async def run() -> tuple[float, float, float]:
        done = 0
        transport = ShardedTransport(len(tokens))  # the worker's own client configuration
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as http:
            async def chain(refresh: str) -> None:
                nonlocal done
                while done < n:
                    done += 1
                    answer = await http.post("/token", auth=(DEV_CLIENT_ID, DEV_CLIENT_SECRET),
                                             data={"grant_type": "refresh_token",
                                                   "refresh_token": refresh})
                    answer.raise_for_status()
                    refresh = answer.json()["refresh_token"]

            await asyncio.sleep(max(start_at - time.time(), 0))
            began, cpu = time.time(), time.process_time()
            await asyncio.gather(*(chain(t) for t in tokens))
            return began, time.time(), time.process_time() - cpu

    out.send(asyncio.run(run()))


async def raw_capacity(
    bank: BankProcess, n: int, processes: int, concurrency: int
) -> tuple[float, str]:
    """Requests/s of ``processes`` direct clients at ``concurrency`` each (the workers'
    layout), and how busy the bank and the clients were meanwhile."""
    ctx = mp.get_context("spawn")
    start_at = time.time() + 3.0  # every client imported and connected by then
    pipes, procs = [], []
    for _ in range(processes):
        tokens = [r for _, r in bank.call("issue", concurrency)]
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_client_main,
                           args=(bank.url, tokens, n // processes, start_at, theirs))
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    await asyncio.sleep(max(start_at - time.time() - 0.5, 0))
    bank_cpu = bank.cpu_seconds()
    results = [await asyncio.to_thread(pipe.recv) for pipe in pipes]
    bank_cpu = bank.cpu_seconds() - bank_cpu
    for proc in procs:
        proc.join(30)
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    busy = (f"bank {100 * bank_cpu / wall:.0f}% of a core, clients "
            + "+".join(f"{100 * r[2] / wall:.0f}%" for r in results))
    return (n // processes) * processes / wall, busy


async def naive(bank: BankProcess, n: int) -> float:
    tokens = [r for _, r in bank.call("issue", n)]
    async with AsyncOAuth2Client(DEV_CLIENT_ID, DEV_CLIENT_SECRET, timeout=30) as client:
        start = time.perf_counter()
        for refresh in tokens:
            await client.refresh_token(f"{bank.url}/token", refresh_token=refresh)
        return n / (time.perf_counter() - start)


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
    first: tuple[float, int] | None = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            count = await refreshed()
            if first is None and count:
                first = (time.perf_counter(), count)
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
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return (n - first[1]) / max(end - first[0], 1e-6), rss


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
        results: dict[str, float] = {}
        rss = 0.0
        for label, latency in (("latency", 0.05), ("cpu", 0.0)):
            bank.call("faults", Faults(latency=latency))
            capacity, busy = await raw_capacity(bank, args.raw, args.workers, args.concurrency)
            simple = await naive(bank, args.naive if latency else args.naive * 3)
            async with router.session("eu") as session, session.begin():
                await session.execute(delete(Credential))
                await session.execute(delete(SyncState))
                await session.execute(delete(Connection))
            await seed(router, custody, app, bank.call("issue", args.credentials))
            bank_cpu, wall = bank.cpu_seconds(), time.perf_counter()
            rate, peak = await worker_rate(router, config, args.credentials, args.workers,
                                           args.concurrency)
            bank_busy = 100 * (bank.cpu_seconds() - bank_cpu) / (time.perf_counter() - wall)
            rss = max(rss, peak)
            print(f"[{label}] bank capacity {capacity:.0f}/s ({busy}), worker {rate:.0f}/s "
                  f"(bank {bank_busy:.0f}% of a core), naive {simple:.0f}/s", flush=True)
            results[f"capacity_{label}"], results[f"worker_{label}"] = capacity, rate
            results[f"naive_{label}"] = simple
        async with router.reader("eu") as session:
            user = (await session.execute(text("SELECT id FROM users LIMIT 1"))).scalar_one()
        libpq = _libpq(url, make_url(url).database or "")
        costs = {}
        for total in (10_000, 1_000_000):
            fill(libpq, app, user, total, due=1_000)
            costs[total] = await lease_cost(router)
            print(f"[lease] {total:>9,} rows: {costs[total] * 1000:.2f} ms per 32-row batch",
                  flush=True)
        print("[lease] plan at 1M rows:\n" + await lease_plan(router), flush=True)
        custody.close()
    finally:
        await router.dispose()
    r = results
    print(
        f"RESULT refresh_vs_bank_capacity={r['worker_latency'] / r['capacity_latency']:.2f}"
        f" refresh_vs_bank_capacity_cpu={r['worker_cpu'] / r['capacity_cpu']:.2f}"
        f" refresh_vs_naive={r['worker_latency'] / r['naive_latency']:.1f}"
        f" lease_cost_1m_vs_10k={costs[1_000_000] / costs[10_000]:.2f}"
        f" peak_rss_mb={rss:.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--credentials", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="per worker process")
    parser.add_argument("--raw", type=int, default=3000, help="requests for (a)")
    parser.add_argument("--naive", type=int, default=100, help="requests for (c) at 50 ms")
    parser.add_argument("--postgres", default=os.environ.get(
        "AGGREGATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
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
