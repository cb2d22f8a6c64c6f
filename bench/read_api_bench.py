"""The app-facing read API against the same stack's limit: a minimal app, same rows.

Our side: the full gateway app (middleware, API-key check, rate limiter, ownership
checks, sealed columns opened through ``Sealer``) over a throw-away PostgreSQL database.
The limit: a minimal Starlette + asyncpg app answering the same three reads with the same
rows as JSON, opening the same sealed columns with AES-GCM under the same key and the
same associated data, so the crypto is on both sides. Both serve from one process each,
on a socket bound by :func:`aggregator.http.serving.bind` (TCP_NODELAY), with the same
uvicorn HTTP implementation.

Load: Debian's ``wrk`` (C, one thread, keep-alive) with the API key header; its CPU is
printed, so one can see it is not the bottleneck. Rounds interleave the two sides and
the three endpoints; each ratio is the median of ours over the median of the minimal app.

Scale: accounts of 1k, 50k and 200k transactions (``--quick``: 1k, 10k, 40k). Per-page
latency is the median of sequential single requests at cursors spread over the whole
depth, for the transaction list and for sync; the ratio is the largest account's over
the smallest's, the worst of the two endpoints. The gateway's RSS is read from
``/proc`` before and after paging once through the middle account.

Prints ``RESULT accounts_vs_minimal=… sync_vs_minimal=… list_vs_minimal=…
page_latency_200k_vs_1k=… rss_growth_mb=…``.

    .venv/bin/python bench/read_api_bench.py            # the full run (~10 min idle)
    .venv/bin/python bench/read_api_bench.py --quick    # proves it works (~2 min)
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
#: vault/envelope.py's documented HKDF info for the GCM key of a data key.
ENCRYPT_INFO = b"aggregator/envelope/v1/encrypt"
AAD_CONTEXT = b"aggregator/field/v1"
UNDATED = date(9999, 12, 31)


# -- the throw-away database --------------------------------------------------------


def _libpq(database: str) -> str:
    return f"{POSTGRES.rstrip('/')}/{database}"


def create_database() -> str:
    name = f"bench_read_{secrets.token_hex(5)}"
    with psycopg.connect(_libpq("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(_libpq("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _settings(database: str, directory: Path) -> Any:
    from aggregator.settings import RateLimit, RegionSettings, Settings
    from aggregator.settings.rate_limits import DEFAULT_RATE_LIMITS, RateLimitSettings
    from vault import LocalKeyringConfig

    url = f"postgresql+psycopg://{POSTGRES.split('://', 1)[1].rstrip('/')}/{database}"
    # The limiter runs (its cost is part of the path) with a budget wrk cannot exhaust.
    classes = {**DEFAULT_RATE_LIMITS, "read": RateLimit(10_000_000, 1_000_000.0)}
    return Settings(
        data_dir=directory,
        regions={"eu": RegionSettings("eu", url, LocalKeyringConfig(directory / "keys", "eu"))},
        rate_limits=RateLimitSettings(classes=classes),
    )


# -- seeding through the gateway's own code ---------------------------------------


class Seeded:
    def __init__(self) -> None:
        self.key = ""
        self.gcm_key = b""
        self.connections: list[str] = []  # per scale
        self.accounts: list[str] = []  # per scale
        self.user_id = ""


def _aad(table: str, column: str, row_id: str, subject: str, region: str) -> bytes:
    out = bytearray(AAD_CONTEXT)
    for part in (table, column, row_id, subject, region):
        raw = part.encode()
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


async def seed(settings: Any, database: str, scales: Sequence[int]) -> Seeded:
    from aggregator.applications import create_application
    from aggregator.custody import open_custody
    from aggregator.ids import new_id
    from aggregator.keyring import envelope_for
    from aggregator.models import Account, AccountType, Balance, Connection, ConnectionStatus
    from aggregator.sealing import Field
    from aggregator.store import RegionRouter, upgrade
    from aggregator.users import create_user

    out = Seeded()
    router = RegionRouter(settings)
    provider = envelope_for(settings.region("eu"), settings).provider
    try:
        provider.ensure_kek()  # `aggregator keys init`
    finally:
        provider.close()
    await upgrade(router.engine("eu"))
    custody = (await open_custody(router, settings))["eu"]
    app_id, out.key = await create_application(router, "Bench", [])
    async with router.session("eu") as session, session.begin():
        user = await create_user(session, custody, app_id, "bench-user")
        out.user_id = user.id
        key = await custody.data_keys.load(session, user.id)
        for n, _size in enumerate(scales):
            connection = Connection(id=new_id("con", "eu"), user_id=user.id,
                                    application_id=app_id, bank_id="sandbox",
                                    status=ConnectionStatus.ACTIVE)
            session.add(connection)
            await session.flush()
            # The accounts endpoint lists five accounts with balances; the first pages.
            for a in range(5):
                account = Account(
                    id=new_id("acc", "eu"), connection_id=connection.id, user_id=user.id,
                    bank_account_id=f"b{n}-{a}", name="",
                    type=AccountType.CHECKING, currency="EUR", masked_identifier=f"{a:04d}",
                )
                # Names are sealed, as a sync stores them (issue 16).
                await custody.sealer.seal_into(key, account, "name_sealed", f"Account {a}",
                                               session=session)
                session.add(account)
                await session.flush()
                session.add(Balance(account_id=account.id, user_id=user.id,
                                    current=Decimal("1204.5000"), currency="EUR",
                                    as_of=datetime.now(UTC)))
                if a == 0:
                    out.accounts.append(account.id)
            out.connections.append(connection.id)
    custody.envelope.prepare(key)  # cached, as a loaded key is in the gateway
    dek = custody.envelope.provider.unwrap(key)
    out.gcm_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=ENCRYPT_INFO).derive(dek)
    # Transactions: sealed by the gateway's Sealer, written with COPY (a sync writes
    # through the ORM; 250k rows that way would take minutes).
    for n, size in enumerate(scales):
        rows = []
        start, now = date(2025, 1, 1), datetime.now(UTC)
        for i in range(size):
            tid = new_id("txn", "eu")
            description = await custody.sealer.seal(
                key, Field("transactions", "description_sealed", tid, user.id),
                f"Card payment {i} at a shop")
            counterparty = await custody.sealer.seal(
                key, Field("transactions", "counterparty_sealed", tid, user.id), "ACME Ltd")
            # ~10 entries a day, so days tie and the id breaks them.
            rows.append((tid, out.accounts[n], out.connections[n], user.id, f"bt{i}",
                         Decimal("-3.5000"), "EUR", start + timedelta(days=i // 10),
                         "booked", description, counterparty, i + 1, i + 1, now, now))
        with psycopg.connect(_libpq(database)) as db:
            with db.cursor().copy(
                "COPY transactions (id, account_id, connection_id, user_id, "
                "bank_transaction_id, amount, currency, booked_on, status, "
                "description_sealed, counterparty_sealed, created_seq, change_seq, "
                "created_at, updated_at) "
                "FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            db.execute("UPDATE connections SET change_seq = %s WHERE id = %s",
                       (size, out.connections[n]))
            db.commit()
    with psycopg.connect(_libpq(database), autocommit=True) as db:
        db.execute("VACUUM ANALYZE")
    custody.close()
    await router.dispose()
    return out


# -- the two servers ----------------------------------------------------------------


def _serve_gateway(settings: Any, ready: Any) -> None:
    from aggregator.http.app import create_app, open_services
    from aggregator.http.serving import bind, serving

    async def main() -> None:
        sock = bind("127.0.0.1", 0)
        async with open_services(settings) as services:
            app = create_app(settings, services=services)
            async with serving(app, sock) as url:
                ready.send((url, os.getpid()))
                await asyncio.Event().wait()

    asyncio.run(main())


def minimal_app(dsn: str, gcm_key: bytes, region: str) -> Any:
    """Starlette + asyncpg: the same three reads, the same rows, the same decryption."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    aead = AESGCM(gcm_key)
    pool: list[Any] = []

    def open_blob(blob: bytes, table: str, column: str, row_id: str, subject: str) -> str:
        n = 2 + blob[1] + 32  # version, id length, id, commitment
        end = n + 12 + 4
        aad = _aad(table, column, row_id, subject, region)
        return aead.decrypt(blob[n:n + 12], blob[end:], blob[:end] + aad).decode()

    def txn(r: Any) -> dict[str, Any]:
        cp = r["counterparty_sealed"]
        return {
            "id": r["id"], "account_id": r["account_id"], "amount": str(r["amount"]),
            "currency": r["currency"], "status": r["status"],
            "booked_on": r["booked_on"] and r["booked_on"].isoformat(),
            "value_on": r["value_on"] and r["value_on"].isoformat(),
            "description": open_blob(r["description_sealed"], "transactions",
                                     "description_sealed", r["id"], r["user_id"]),
            "counterparty": None if cp is None else open_blob(
                cp, "transactions", "counterparty_sealed", r["id"], r["user_id"]),
            "merchant_category": r["merchant_category"],
        }

    cols = ("id, account_id, user_id, amount, currency, status, booked_on, value_on, "
            "description_sealed, counterparty_sealed, merchant_category")

    def answer(body: Any) -> Response:
        return Response(json.dumps(body), media_type="application/json")

    async def accounts(request: Request) -> Response:
        # The same answer in one statement: accounts, balances, the sealed names, the
        # per-resource freshness and the spends in the budget window (none are seeded,
        # so next_sync_allowed_at is the time of the request, as the gateway answers).
        async with pool[0].acquire() as db:
            rows = await db.fetch(
                "SELECT a.id, a.connection_id, a.user_id, a.name_sealed, a.type, a.currency, "
                "a.masked_identifier, b.current, b.available, b.credit_limit, "
                "b.currency AS bcur, b.as_of, "
                "(SELECT coalesce(json_agg(json_build_array(r.resource, r.outcome, "
                "r.error_code, r.synced_at, r.checked_at) ORDER BY r.resource), '[]') "
                "FROM account_resources r WHERE r.account_id = a.id) AS fresh, "
                "(SELECT count(*) FROM sync_spends s WHERE s.connection_id = a.connection_id "
                "AND s.spent_at > now() - interval '1 day') AS spent "
                "FROM accounts a LEFT JOIN balances b "
                "ON b.account_id = a.id WHERE a.connection_id = $1 "
                "ORDER BY a.created_at, a.id", request.path_params["id"])
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return answer({"data": [{
            "id": r["id"], "connection_id": r["connection_id"],
            "name": open_blob(r["name_sealed"], "accounts", "name_sealed", r["id"],
                              r["user_id"]),
            "type": r["type"], "currency": r["currency"], "mask": r["masked_identifier"],
            "balance": None if r["current"] is None else {
                "current": str(r["current"]), "available": None, "credit_limit": None,
                "currency": r["bcur"],
                "as_of": r["as_of"].isoformat().replace("+00:00", "Z")},
            "next_sync_allowed_at": now,
            "freshness": [{"resource": f[0], "outcome": f[1], "error": None,
                           "synced_at": f[3], "checked_at": f[4]}
                          for f in json.loads(r["fresh"])]} for r in rows]})

    async def sync(request: Request) -> Response:
        async with pool[0].acquire() as db:
            rows = await db.fetch(
                f"SELECT {cols} FROM transactions WHERE connection_id = $1 "  # noqa: S608
                "AND change_seq > $2 ORDER BY change_seq LIMIT $3",
                request.path_params["id"], int(request.query_params.get("cursor") or 0),
                int(request.query_params.get("count", "100")))
        return answer({"added": [txn(r) for r in rows], "modified": [], "removed": [],
                       "next_cursor": "x", "has_more": True})

    async def listing(request: Request) -> Response:
        async with pool[0].acquire() as db:
            rows = await db.fetch(
                f"SELECT {cols} FROM transactions WHERE account_id = $1 "  # noqa: S608
                "AND removed_at IS NULL ORDER BY coalesce(booked_on, value_on, "
                "'9999-12-31') DESC, id DESC LIMIT $2",
                request.path_params["id"], int(request.query_params.get("limit", "100")))
        return answer({"data": [txn(r) for r in rows], "next_cursor": None})

    app = Starlette(routes=[
        Route("/v1/connections/{id}/accounts", accounts),
        Route("/v1/connections/{id}/transactions/sync", sync),
        Route("/v1/accounts/{id}/transactions", listing),
    ])
    app.state.pool = pool
    app.state.dsn = dsn
    return app


async def _open_pool(app: Any) -> None:
    import asyncpg

    app.state.pool.append(await asyncpg.create_pool(app.state.dsn, min_size=4, max_size=10))


def _serve_minimal(dsn: str, gcm_key: bytes, ready: Any) -> None:
    from aggregator.http.serving import bind, serving

    async def main() -> None:
        app = minimal_app(dsn, gcm_key, "eu")
        await _open_pool(app)
        sock = bind("127.0.0.1", 0)
        async with serving(app, sock) as url:
            ready.send((url, os.getpid()))
            await asyncio.Event().wait()

    asyncio.run(main())


def start(target: Any, *args: Any) -> tuple[Any, str, int]:
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    if not parent.poll(60):
        raise RuntimeError(f"{target.__name__} did not start")
    url, pid = parent.recv()
    return proc, url, pid


# -- load and measurements ----------------------------------------------------------


def wrk(url: str, key: str, seconds: float, connections: int) -> tuple[float, float]:
    """Requests per second and the generator's CPU share of one core, by Debian's wrk."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-H", f"Authorization: Bearer {key}", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / wall
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw error answers from {url}:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(match.group(1)), cpu


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cursor(resource_id: str, *parts: str) -> str:
    from aggregator.http.cursors import encode_cursor

    return encode_cursor(resource_id, *parts)


def page_cursors(database: str, account_id: str, connection_id: str, size: int,
                 samples: int) -> tuple[list[str | None], list[str | None]]:
    """Cursors at evenly spread depths of the list and of the sync sequence."""
    lists: list[str | None] = [None]
    syncs: list[str | None] = [None]
    with psycopg.connect(_libpq(database)) as db:
        for k in range(1, samples):
            offset = size * k // samples
            day, tid = db.execute(
                "SELECT coalesce(booked_on, value_on, '9999-12-31'), id FROM transactions "
                "WHERE account_id = %s AND removed_at IS NULL ORDER BY 1 DESC, 2 DESC "
                "OFFSET %s LIMIT 1", (account_id, offset)).fetchone() or (UNDATED, "")
            lists.append(_cursor(account_id, day.isoformat(), tid))
            syncs.append(_cursor(connection_id, str(offset)))
    return lists, syncs


async def page_latency(base: str, key: str, path: str, cursors: list[str | None],
                       param: str, reps: int) -> float:
    """Median seconds of one request at each cursor, sequential (latency, not rate)."""
    times = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"},
                                 timeout=60) as client:
        for _ in range(reps):
            for cursor in cursors:
                params = {param: "100", **({"cursor": cursor} if cursor else {})}
                started = time.perf_counter()
                answer = await client.get(path, params=params)
                times.append(time.perf_counter() - started)
                answer.raise_for_status()
    return statistics.median(times)


async def page_through(base: str, key: str, account_id: str) -> int:
    pages, cursor = 0, None
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"},
                                 timeout=60) as client:
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            body = (await client.get(f"/v1/accounts/{account_id}/transactions",
                                     params=params)).raise_for_status().json()
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small scales, short rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto",
                        help="uvicorn's HTTP implementation for both servers")
    args = parser.parse_args()
    if args.http != "auto":
        import aggregator.http.serving as serving

        serving.http_implementation = lambda: args.http  # both servers fork after this
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")
    scales = (1_000, 10_000, 40_000) if args.quick else (1_000, 50_000, 200_000)
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (2 if args.quick else 5)

    database = create_database()
    directory = Path(tempfile.mkdtemp(prefix="bench-read-"))
    procs: list[Any] = []
    try:
        settings = _settings(database, directory)
        began = time.perf_counter()
        seeded = asyncio.run(seed(settings, database, scales))
        print(f"seeded {sum(scales)} sealed transactions in "
              f"{time.perf_counter() - began:.0f} s (database {database})")
        gateway, ours, gateway_pid = start(_serve_gateway, settings)
        minimal, theirs, _ = start(_serve_minimal, _libpq(database), seeded.gcm_key)
        procs += [gateway, minimal]
        con, acc = seeded.connections[0], seeded.accounts[0]
        paths = {
            "accounts": f"/v1/connections/{con}/accounts",
            "sync": f"/v1/connections/{con}/transactions/sync?count=500",
            "list": f"/v1/accounts/{acc}/transactions?limit=500",
        }
        # The same answers on both sides (sanity): every field but the instant of the
        # request, which next_sync_allowed_at is when the budget allows a sync now.
        for name, path in paths.items():
            a = httpx.get(ours + path, headers={"Authorization": f"Bearer {seeded.key}"})
            b = httpx.get(theirs + path)
            field = "added" if name == "sync" else "data"
            mine, minimal = (
                [{k: v for k, v in row.items() if k != "next_sync_allowed_at"}
                 for row in side.raise_for_status().json()[field]] for side in (a, b))
            assert mine == minimal, (name, mine[:1], minimal[:1])
        rates: dict[tuple[str, str], list[float]] = {}
        cpus: list[float] = []
        for r in range(rounds):
            for name, path in paths.items():
                sides = [("ours", ours), ("minimal", theirs)]
                for side, base in sides if r % 2 == 0 else sides[::-1]:
                    rate, cpu = wrk(base + path, seeded.key, seconds, args.connections)
                    rates.setdefault((name, side), []).append(rate)
                    cpus.append(cpu)
        ratios = {}
        print(f"{'endpoint':<10} {'ours req/s':>11} {'minimal req/s':>14} {'ratio':>6}")
        for name in paths:
            o = statistics.median(rates[(name, "ours")])
            m = statistics.median(rates[(name, "minimal")])
            ratios[name] = o / m
            print(f"{name:<10} {o:>11.0f} {m:>14.0f} {o / m:>6.2f}")
        from aggregator.http.serving import http_implementation

        print(f"uvicorn HTTP implementation: {http_implementation()}")
        print(f"wrk CPU: median {statistics.median(cpus):.0%} of one core, "
              f"max {max(cpus):.0%} (below 100 %: the generator is not the limit)")

        latencies: dict[str, list[float]] = {"list": [], "sync": []}
        for n, size in enumerate(scales):
            lists, syncs = page_cursors(database, seeded.accounts[n], seeded.connections[n],
                                        size, 8)
            latencies["list"].append(asyncio.run(page_latency(
                ours, seeded.key, f"/v1/accounts/{seeded.accounts[n]}/transactions", lists,
                "limit", 3)))
            latencies["sync"].append(asyncio.run(page_latency(
                ours, seeded.key, f"/v1/connections/{seeded.connections[n]}/transactions/sync",
                syncs, "count", 3)))
            print(f"{size:>7} rows: page of 100, median list "
                  f"{latencies['list'][-1] * 1e3:.1f} ms, sync "
                  f"{latencies['sync'][-1] * 1e3:.1f} ms")
        growth = max(latencies[k][-1] / latencies[k][0] for k in latencies)

        before = rss_mb(gateway_pid)
        pages = asyncio.run(page_through(ours, seeded.key, seeded.accounts[1]))
        after = rss_mb(gateway_pid)
        print(f"gateway RSS {before:.0f} MB -> {after:.0f} MB paging {pages} pages of "
              f"{scales[1]} rows")
        label = f"{scales[-1] // 1000}k_vs_{scales[0] // 1000}k"
        print(f"RESULT accounts_vs_minimal={ratios['accounts']:.2f} "
              f"sync_vs_minimal={ratios['sync']:.2f} list_vs_minimal={ratios['list']:.2f} "
              f"page_latency_{label}={growth:.2f} rss_growth_mb={after - before:.1f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(5)
        drop_database(database)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
