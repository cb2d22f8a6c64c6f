"""Plaid webhooks verified and stored per second, against a trivial endpoint, and p99.

One server process: the full gateway app served by uvicorn on loopback, on SQLite or on
PostgreSQL (a throw-away schema with a unique name, dropped at the end). It serves our
path, ``POST /webhooks/plaid/us`` (middleware, ES256 verification with a cached key,
strict JSON, body SHA-256, the upsert into the region's store with its job), and the
limit measured in the same run: ``POST /bench/trivial`` on the *same* app and process,
which reads the same body and answers 200.

The load generator is Debian's ``wrk`` (C, epoll; ``apt-get install -y wrk``) with a Lua
script that posts pre-signed webhooks, each body unique (a repeat would be coalesced,
not stored), so the generator is not the bottleneck; its CPU share is printed beside
the server's to show which side is saturated.

1. Capacity: ``--seconds`` of closed-loop load at ``--connections`` for each endpoint,
   rounds interleaved; the median rate of each; the ratio webhooks / trivial.
2. Latency at half capacity: wrk's per-connection ``delay()`` paces each connection so
   the total offered rate is half the measured webhook capacity; wrk's p99.

Prints ``RESULT store=… webhook_per_s=… trivial_per_s=… ratio=… p99_ms_at_half=…`` per
store. Targets (issue 15): ratio ≥ 0.5, p99 ≤ 50 ms at half load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from _postgres import create_schema, drop_schema  # bench/_postgres.py: run as `python bench/…`
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = "aggregator_bench"

# wrk: each thread walks its own slice of the pre-signed requests (no body twice), and
# reports the latency percentiles and counts on one line the bench parses.
LUA = r"""
local requests, index, stride = {}, 0, 1
local threads = {}
late, lag_max_ms = 0, 0  -- globals: done() reads them from each thread
function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end
function init(args)
  local file = io.open(args[1], "rb")
  for line in file:lines() do
    local header, body = line:match("^([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/json", ["Plaid-Verification"] = header}, body)
  end
  file:close()
  stride = tonumber(args[2])
  interval_ms = 1000 / math.max(tonumber(args[3]), 1e-9)
  index = id
end
function request()
  local r = requests[(index % #requests) + 1]
  index = index + stride
  return r
end
function done(summary, latency, requests)
  local late, lag = 0, 0
  for _, thread in ipairs(threads) do
    late = late + thread:get("late")
    lag = math.max(lag, thread:get("lag_max_ms"))
  end
  io.write(string.format("WRK requests=%d duration_us=%d non2xx=%d errors=%d "
    .. "p50_us=%d p99_us=%d max_us=%d late=%d lag_max_us=%d\n", summary.requests,
    summary.duration, summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, late, lag * 1000))
end
"""
# Paced runs only (wrk sends without a timer hop when the script has no delay()). Open
# loop: every request takes the next slot of one fixed schedule, interval_ms apart, and
# waits for it. A think time of C / rate per connection (what this bench did before)
# offers C / (think + latency), so the achieved rate fell short by the server's own
# latency: "offered ~1,067/s, achieved 773/s". A slot already past is sent at once and
# counted as late (the server or wrk fell behind the schedule).
LUA_PACED = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local clock = ffi.new("bench_timespec")
local due = nil
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end
function delay()
  local now = now_ms()
  due = due or now
  local slot = due
  due = due + interval_ms
  if slot < now - 1 then
    late = late + 1
    lag_max_ms = math.max(lag_max_ms, now - slot)
  end
  return math.max(0, math.floor(slot - now + 0.5))
end
"""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Key:
    """A Plaid-style ES256 signing key and its public JWK."""

    def __init__(self) -> None:
        self.kid = "bench-kid"
        self.private = ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        return {"alg": "ES256", "crv": "P-256", "kid": self.kid, "kty": "EC", "use": "sig",
                "x": _b64url(numbers.x.to_bytes(32, "big")),
                "y": _b64url(numbers.y.to_bytes(32, "big")),
                "created_at": int(time.time()), "expired_at": None}

    def sign(self, body: bytes) -> str:
        header = _b64url(json.dumps({"alg": "ES256", "kid": self.kid, "typ": "JWT"}).encode())
        claims = _b64url(json.dumps({"iat": int(time.time()), "request_body_sha256":
                                     hashlib.sha256(body).hexdigest()}).encode())
        der = self.private.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{header}.{claims}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _gateway_app(directory: Path, url: str, jwk: Mapping[str, Any]) -> Any:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from aggregator.http import Services
    from aggregator.http.app import create_app
    from aggregator.plaid import PlaidWebhooks
    from aggregator.plaid.needs import SERVICE_KEY
    from aggregator.settings import RegionSettings, Settings
    from aggregator.store import RegionRouter, upgrade
    from aggregator.store.engines import create_region_engine
    from connectors import WebhookKeys, WebhookVerifier
    from vault import LocalKeyringConfig

    async def migrate() -> None:
        engine = create_region_engine("us", url)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    settings = Settings(data_dir=directory, regions={
        "us": RegionSettings("us", url, LocalKeyringConfig(directory / "keys", "us"))})
    router = RegionRouter(settings)

    async def fetch(kid: str) -> Mapping[str, Any] | None:
        return jwk if kid == jwk["kid"] else None

    services = Services(settings, router, {}, cast(Any, None))  # no bank is called
    services.extra[SERVICE_KEY] = PlaidWebhooks(
        router, {"us": WebhookVerifier(WebhookKeys(fetch))})
    app = create_app(settings, services=services)

    async def trivial(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "stored"})

    app.router.add_route("/bench/trivial", trivial, methods=["POST"])
    return app


def _serve(directory: str, url: str, jwk: dict[str, Any], ports: Any, profile: str) -> None:
    import uvicorn

    from aggregator.http.serving import bind, server_config

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    app = _gateway_app(Path(directory), url, jwk)
    if profile:
        _profile_on_signals(profile)
    sock = bind("127.0.0.1", 0)
    ports.put(sock.getsockname()[1])
    asyncio.run(uvicorn.Server(server_config(app)).serve(sockets=[sock]))


def _profile_on_signals(path: str) -> None:
    """cProfile in the server from SIGUSR1 to SIGUSR2, which writes the stats to ``path``.

    The handlers run on the main thread, the event loop's, which is the thread profiled.
    """
    import cProfile
    import signal

    profiler = cProfile.Profile()

    def start(signum: int, frame: Any) -> None:
        profiler.enable()

    def stop(signum: int, frame: Any) -> None:
        profiler.disable()
        profiler.dump_stats(f"{path}.part")
        os.replace(f"{path}.part", path)  # the bench reads it whole or not at all

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    """``uptime``'s load averages, flagged when the machine is busy (shared machine)."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    busy = " (under load)" if float(one) > 1.5 else ""
    return f"load {one} {five} {fifteen}{busy}"


def _write_load(key: _Key, path: Path, n: int, tag: str) -> None:
    with path.open("w") as out:
        for i in range(n):
            body = json.dumps({"webhook_type": "TRANSACTIONS",
                               "webhook_code": "SYNC_UPDATES_AVAILABLE",
                               "item_id": f"item-{tag}-{i}", "initial_update_complete": True,
                               "historical_update_complete": True,
                               "environment": "sandbox"}, separators=(",", ":"))
            out.write(f"{key.sign(body.encode())}\t{body}\n")


class Run:
    """One wrk run's figures."""

    def __init__(self, line: str, wall: float, wrk_cpu: float, server_cpu: float) -> None:
        found = dict(re.findall(r"(\w+)=(\d+)", line))
        self.requests = int(found["requests"])
        self.rate = self.requests / (int(found["duration_us"]) / 1e6)
        self.failed = int(found["non2xx"]) + int(found["errors"])
        self.p50_ms = int(found["p50_us"]) / 1000
        self.p99_ms = int(found["p99_us"]) / 1000
        self.late = int(found["late"])
        self.lag_max_ms = int(found["lag_max_us"]) / 1000
        self.wrk_cpu = wrk_cpu / wall
        self.server_cpu = server_cpu / wall
        #: Server CPU time per request (user + system), the figure a busy machine leaves
        #: least distorted: a rate falls with other engineers' load, CPU per request less.
        self.cpu_ms = server_cpu * 1000 / max(1, self.requests)
        self.load = _load()

    def describe(self) -> str:
        return (f"{self.rate:,.0f}/s  p99 {self.p99_ms:.1f} ms  failed {self.failed}  "
                f"server CPU {self.server_cpu:.0%} ({self.cpu_ms:.3f} ms/request)  "
                f"wrk CPU {self.wrk_cpu:.0%}  {self.load}")


def _wrk(url: str, script: Path, load: Path, *, connections: int, seconds: float,
         rate: float, server_pid: int, profile: bool = False) -> Run:
    """One wrk run: closed loop when ``rate`` is 0, else paced at ``rate`` requests/s."""
    script.write_text(LUA + (LUA_PACED if rate else ""))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", str(script), url, "--", str(load), "1", f"{rate:.3f}"]
    if profile:
        os.kill(server_pid, signal.SIGUSR1)
    server_before, start = _cpu_seconds(server_pid), time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    server_cpu = _cpu_seconds(server_pid) - server_before
    if profile:
        os.kill(server_pid, signal.SIGUSR2)
    stdout = proc.stdout.read() if proc.stdout else ""
    line = next((x for x in stdout.splitlines() if x.startswith("WRK ")), None)
    if status != 0 or line is None:
        stderr = proc.stderr.read() if proc.stderr else ""
        raise SystemExit(f"wrk failed ({status}): {stdout[-500:]} {stderr[-500:]}")
    return Run(line, wall, usage.ru_utime + usage.ru_stime, server_cpu)


def _print_profile(path: Path, requests: int) -> None:
    import pstats

    for _ in range(50):  # the server writes it on SIGUSR2
        if path.exists():
            break
        time.sleep(0.1)
    print(f"cProfile of the server over {requests} webhooks (times are totals; "
          f"divide by {requests} for per-request cost):")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(25)


def bench_store(store: str, args: argparse.Namespace, key: _Key, work: Path) -> dict[str, float]:
    schema = None
    if store == "postgresql":
        schema, url = create_schema(PG_URL, PG_DATABASE)
    else:
        url = f"sqlite+aiosqlite:///{work / f'{store}-us.sqlite3'}"
    profile = work / f"{store}.prof" if args.profile else None
    ctx = mp.get_context("spawn")
    ports: Any = ctx.Queue()
    server = ctx.Process(target=_serve, args=(str(work), url, key.jwk(), ports,
                                              str(profile or "")), daemon=True)
    server.start()
    try:
        base = f"http://127.0.0.1:{ports.get(timeout=120)}"
        pid = cast(int, server.pid)
        script = work / "post.lua"
        # Enough unique bodies for the fastest run; signed now, so iat stays fresh.
        per_run = max(1000, int(args.expect * args.seconds * 1.5))
        rates: dict[str, list[Run]] = {"trivial": [], "webhook": []}
        for r in range(args.rounds):
            for kind, path in (("trivial", "/bench/trivial"), ("webhook", "/webhooks/plaid/us")):
                load = work / f"{store}-{kind}-{r}.tsv"
                _write_load(key, load, per_run, f"{store}{kind}{r}")
                run = _wrk(base + path, script, load, connections=args.connections,
                           seconds=args.seconds, rate=0, server_pid=pid)
                rates[kind].append(run)
                print(f"{store} round {r} {kind}: {run.describe()}", flush=True)
                if run.failed:
                    raise SystemExit(f"{run.failed} requests failed: see the server")
        trivial = statistics.median(r.rate for r in rates["trivial"])
        webhook = statistics.median(r.rate for r in rates["webhook"])
        cpu = {kind: statistics.median(r.cpu_ms for r in runs) for kind, runs in rates.items()}
        half = webhook / 2
        load = work / f"{store}-half.tsv"
        _write_load(key, load, max(1000, int(half * args.seconds * 1.5)), f"{store}half")
        paced = _wrk(base + "/webhooks/plaid/us", script, load, connections=args.connections,
                     seconds=args.seconds, rate=half, server_pid=pid)
        print(f"{store} half load: offered {half:,.0f}/s, achieved {paced.rate:,.0f}/s, "
              f"p50 {paced.p50_ms:.1f} ms, p99 {paced.p99_ms:.1f} ms, failed {paced.failed}, "
              f"late {paced.late} (worst {paced.lag_max_ms:.0f} ms behind), "
              f"server CPU {paced.server_cpu:.0%} ({paced.cpu_ms:.3f} ms/request), "
              f"wrk CPU {paced.wrk_cpu:.0%}, {paced.load}", flush=True)
        if profile is not None:
            load = work / f"{store}-profile.tsv"
            _write_load(key, load, per_run, f"{store}profile")
            profiled = _wrk(base + "/webhooks/plaid/us", script, load,
                            connections=args.connections, seconds=args.seconds, rate=0,
                            server_pid=pid, profile=True)
            _print_profile(profile, profiled.requests)
    finally:
        server.terminate()
        server.join(10)
        if schema is not None:
            drop_schema(PG_URL, PG_DATABASE, schema)
    return {"webhook_per_s": webhook, "trivial_per_s": trivial, "ratio": webhook / trivial,
            "webhook_cpu_ms": cpu["webhook"], "trivial_cpu_ms": cpu["trivial"],
            "cpu_ratio": cpu["trivial"] / cpu["webhook"],
            "p99_ms_at_half": paced.p99_ms, "half_load_per_s": paced.rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--expect", type=float, default=6000,
                        help="highest rate expected (sizes the pre-signed load)")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 2 rounds")
    parser.add_argument("--profile", action="store_true",
                        help="then one more webhook run under cProfile; print its top")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 2.0, 2
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    key = _Key()
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for store in args.stores.split(","):
            results[store] = bench_store(store, args, key, Path(directory))
    for store, figures in results.items():
        print(f"{store}: webhooks {figures['webhook_per_s']:,.0f}/s vs trivial "
              f"{figures['trivial_per_s']:,.0f}/s (ratio {figures['ratio']:.2f}); "
              f"p99 at half load ({figures['half_load_per_s']:,.0f}/s) "
              f"{figures['p99_ms_at_half']:.1f} ms; server CPU per request "
              f"{figures['webhook_cpu_ms']:.3f} vs {figures['trivial_cpu_ms']:.3f} ms "
              f"(CPU ratio {figures['cpu_ratio']:.2f})")
    for store, figures in results.items():
        print(f"RESULT store={store} " + " ".join(
            f"{name}={value:.2f}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
