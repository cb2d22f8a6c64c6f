"""``POST /v1/users`` with and without an ``Idempotency-Key``, on PostgreSQL, same run.

Our path: the full gateway app (middleware, API-key authentication, user creation with
a fresh sealed data key, the audit chain) served by uvicorn on a loopback socket over a
fresh PostgreSQL database, with a unique ``Idempotency-Key`` on every request: a claim
(insert-or-nothing) before the work and the sealed answer stored after it. Its limit:
the very same requests without the header, against the same server, measured in the
same run with rounds interleaved (the order alternates, so neither variant always runs
on a warmer or fuller table). The server runs in a child process, so the load
generator does not share its interpreter. Replays (the same key again) are measured too,
for orientation: they do no work, so they should be faster than either.

Prints ``RESULT idempotency_overhead=… keyed_rps=… plain_rps=… replay_rps=… cpu_ms_plain=…
cpu_ms_keyed=…``: the first is the median over rounds of keyed / plain rates (each round
runs both back to back, so a shared machine's changing load hits both alike), the last
two the gateway process's CPU time per request of each variant (the database's not
included). Target: ``idempotency_overhead`` ≥ 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import _postgres  # bench/_postgres.py: run as `python bench/…`
import httpx

ADMIN_URL = os.environ.get("AGGREGATOR_BENCH_POSTGRES_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432")


def create_database() -> tuple[str, str]:
    """A throw-away database with a unique name (``bench_idempotency_…``); (name, URL)."""
    return _postgres.create_database(ADMIN_URL, "idempotency")


def drop_database(name: str) -> None:
    _postgres.drop_database(ADMIN_URL, name)


def _settings(directory: Path, url: str) -> Any:
    from aggregator.settings import RateLimitSettings, RegionSettings, Settings
    from vault import LocalKeyringConfig

    # Rate limits off: both variants would pay the same bucket write per request, and the
    # burst would refuse the benchmark's own load; what is measured is the key's cost.
    return Settings(data_dir=directory, regions={
        "eu": RegionSettings("eu", url, LocalKeyringConfig(directory / "keys", "eu"))},
        rate_limits=RateLimitSettings(enabled=False))


async def prepare(directory: Path, url: str) -> str:
    """Schema, key-encryption key and an application; returns its API key."""
    from aggregator.applications import create_application
    from aggregator.store import RegionRouter, upgrade
    from vault import open_provider

    settings = _settings(directory, url)
    open_provider(settings.region("eu").keys).ensure_kek()
    router = RegionRouter(settings)
    try:
        await upgrade(router.engine("eu"))
        _, key = await create_application(router, "Bench", [])
    finally:
        await router.dispose()
    return key


def _serve(directory: str, url: str, ports: Any) -> None:
    import uvicorn

    from aggregator.custody import open_custody
    from aggregator.http import Services
    from aggregator.http.app import create_app
    from aggregator.http.serving import bind, server_config
    from aggregator.store import RegionRouter

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    settings = _settings(Path(directory), url)

    async def run() -> None:
        router = RegionRouter(settings)
        custody = await open_custody(router, settings)
        services = Services(settings, router, custody, cast(Any, None))  # no bank called
        sock = bind("127.0.0.1", 0)
        ports.put(sock.getsockname()[1])
        await uvicorn.Server(server_config(create_app(settings, services=services))) \
            .serve(sockets=[sock])

    asyncio.run(run())


async def _round(base: str, api_key: str, bodies: list[dict[str, str]],
                 keys: list[str] | None, concurrency: int) -> float:
    """Requests per second for ``bodies`` (one ``Idempotency-Key`` each when ``keys``)."""
    work = iter(enumerate(bodies))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, headers={
            "Authorization": f"Bearer {api_key}"}) as client:
        async def worker() -> None:
            for i, body in work:
                headers = {"Idempotency-Key": keys[i]} if keys else {}
                answer = await client.post("/v1/users", json=body, headers=headers)
                if answer.status_code != 201:
                    raise SystemExit(f"unexpected {answer.status_code}: {answer.text[:200]}")
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per round")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="4 rounds of 60 requests")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 60, 4

    name, url = create_database()
    ctx = mp.get_context("spawn")
    ports: Any = ctx.Queue()
    server = None
    rates: dict[str, list[float]] = {"plain": [], "keyed": [], "replay": []}
    cpu = {"plain": 0.0, "keyed": 0.0}
    try:
        with tempfile.TemporaryDirectory() as directory:
            api_key = asyncio.run(prepare(Path(directory), url))
            server = ctx.Process(target=_serve, args=(directory, url, ports), daemon=True)
            server.start()
            base = f"http://127.0.0.1:{ports.get(timeout=60)}"
            warm = [{"external_id": f"warm-{i}", "region": "eu"} for i in range(100)]
            asyncio.run(_round(base, api_key, warm, None, args.concurrency))
            for r in range(args.rounds):
                order = ("plain", "keyed") if r % 2 == 0 else ("keyed", "plain")
                for kind in order:
                    bodies = [{"external_id": f"{kind}-{r}-{i}", "region": "eu"}
                              for i in range(args.requests)]
                    keys = [secrets.token_urlsafe(16) for _ in bodies] \
                        if kind == "keyed" else None
                    before = _cpu_seconds(server.pid or 0)
                    rates[kind].append(asyncio.run(
                        _round(base, api_key, bodies, keys, args.concurrency)))
                    cpu[kind] += _cpu_seconds(server.pid or 0) - before
                    if keys is not None:  # the same requests again: every one a replay
                        rates["replay"].append(asyncio.run(
                            _round(base, api_key, bodies, keys, args.concurrency)))
                print(f"round {r}: plain {rates['plain'][-1]:,.0f}/s  "
                      f"keyed {rates['keyed'][-1]:,.0f}/s", flush=True)
    finally:
        if server is not None and server.is_alive():
            server.terminate()
            server.join(10)
        drop_database(name)
    # The machine is shared: each round's two variants ran back to back, so their ratio
    # is compared under the same load; the median of those ratios is the figure.
    ratio = statistics.median(k / p for k, p in zip(rates["keyed"], rates["plain"],
                                                     strict=True))
    plain = statistics.median(rates["plain"])
    keyed = statistics.median(rates["keyed"])
    replay = statistics.median(rates["replay"])
    per_request = {k: v / (args.rounds * args.requests) * 1000 for k, v in cpu.items()}
    print(f"plain {plain:,.0f}/s  keyed {keyed:,.0f}/s  replay {replay:,.0f}/s "
          f"(medians of {args.rounds} rounds of {args.requests}, concurrency "
          f"{args.concurrency}); gateway CPU per request: plain "
          f"{per_request['plain']:.2f} ms, keyed {per_request['keyed']:.2f} ms")
    print(f"RESULT idempotency_overhead={ratio:.3f} keyed_rps={keyed:.0f} "
          f"plain_rps={plain:.0f} replay_rps={replay:.0f} "
          f"cpu_ms_plain={per_request['plain']:.2f} cpu_ms_keyed={per_request['keyed']:.2f}")


if __name__ == "__main__":
    main()
