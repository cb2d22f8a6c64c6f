"""Chaos: refresh workers killed with SIGKILL at random times against a strict rotating bank.

A strict bank rotates the refresh token on every refresh and revokes the grant when a
used one comes back (the sandbox does both). A worker killed after the bank answered a
refresh and before the commit storing the new tokens loses that grant: the stored
refresh token is retired, the next one never arrived. The gateway cannot avoid the loss,
only detect it (the in-flight mark, resolved by a surviving worker: the connection turns
``reauth_required``) and keep the window small. This measures both:

- ``--workers`` worker processes refresh a fixed population of credentials whose access
  tokens live ``--ttl`` seconds, sized for about ``--rate`` refreshes per second (the
  bank profile's ``[refresh]`` floor is lowered so the cadence follows the lifetime);
- every ``--kill-every`` seconds (uniformly 0.75-1.25 times it) a random worker gets
  SIGKILL and is replaced, for ``--duration`` seconds;
- then the survivors stop, one clean worker resolves what the dead left in flight, and
  every credential is checked at the bank: live, flagged ``reauth_required`` (a detected
  loss) or — the failure this must never show — active with a dead grant (unflagged).

Prints lost grants per kill; the answered-but-uncommitted window, from the workers' own
``aggregator_worker_uncommitted_seconds`` histogram; and the lower bound the window sets,
``rate per worker x window`` (the refreshes a killed worker holds answered-but-uncommitted
on average, by Little's law). The final line is ``RESULT lost_per_kill=… window_ms=…
lower_bound_per_kill=… lost_vs_lower_bound=… refreshes_per_s=… kills=…
unflagged_losses=… leases_left=…``.

Run: ``python bench/chaos_bench.py --duration 120 --workers 4 --rate 80`` (a PostgreSQL
at ``AGGREGATOR_BENCH_POSTGRES_URL``, default 127.0.0.1:5432; a throw-away schema).
:func:`run_chaos` is also what the short CI test drives (tests/bench/test_chaos_bench.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the worker harness lives with the tests
    sys.path.insert(0, str(ROOT))

from aggregator.custody import RegionCustody  # noqa: E402
from aggregator.ids import ApplicationId  # noqa: E402
from aggregator.models import ConnectionStatus  # noqa: E402
from aggregator.settings import Settings  # noqa: E402
from aggregator.store import RegionRouter  # noqa: E402
from tests.aggregator.worker._harness import (  # noqa: E402
    Workers,
    first_access_tokens,
    link_many,
    serve_banks,
    states,
    wait_for,
    write_config,
)

BANK = "chaos-bank"
_SAMPLE = re.compile(r"^(aggregator_worker_\w+)(\{[^}]*\})? ([0-9.e+-]+)$", re.M)


@dataclass
class ChaosResult:
    credentials: int
    duration: float
    kills: int
    refreshes: int
    window_sum: float
    window_count: int
    latency_sum: float  # the token endpoint's round trips: sent, not yet answered
    latency_count: int
    lost: int  # flagged reauth_required: detected losses
    unflagged: int  # active with a dead grant: undetected losses (must be 0)
    leases_left: int
    workers: int
    per_kill_lost: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.refreshes / self.duration if self.duration else 0.0

    @property
    def window(self) -> float:
        return self.window_sum / self.window_count if self.window_count else 0.0

    @property
    def latency(self) -> float:
        return self.latency_sum / self.latency_count if self.latency_count else 0.0

    @property
    def lower_bound_sent(self) -> float:
        """With the round trip too: a request the bank received rotates even if the
        worker dies before the answer arrives."""
        return self.rate / self.workers * (self.latency + self.window)

    @property
    def lost_per_kill(self) -> float:
        return self.lost / self.kills if self.kills else 0.0

    @property
    def lower_bound(self) -> float:
        return self.rate / self.workers * self.window


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _totals(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        if name == "aggregator_worker_refreshes_total" and 'outcome="ok"' not in labels:
            continue
        out[name] = out.get(name, 0.0) + float(value)
    return out


class Scraper:
    """Keeps each worker process's latest counters, so a killed one's still count."""

    def __init__(self) -> None:
        self.last: dict[int, dict[str, float]] = {}

    async def scrape(self, http: httpx.AsyncClient, ports: dict[int, int]) -> None:
        for pid, port in list(ports.items()):
            with contextlib.suppress(httpx.HTTPError):
                answer = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=1.0)
                self.last[pid] = _totals(answer.text)

    def total(self, name: str) -> float:
        return sum(found.get(name, 0.0) for found in self.last.values())


async def run_chaos(
    router: RegionRouter, custody: RegionCustody, app_id: ApplicationId, settings: Settings,
    directory: Path, *, workers: int = 4, rate: float = 80.0, ttl: int = 3,
    duration: float = 120.0, kill_every: float = 3.5, seed: int = 1, concurrency: int = 8,
    lease_seconds: float = 3.0, worker_args: tuple[str, ...] = (),
) -> ChaosResult:
    """Run the chaos scenario on ``router``'s database; bounded by ``duration`` plus a
    settle phase of at most ``4 * lease_seconds + 30`` seconds."""
    rng = random.Random(seed)  # kill times, not security
    # A refresh falls due ~77 % into the token's life (a fifth ahead, jitter up to 10 %).
    n = max(8, round(rate * ttl * 0.77))
    scraper, ports = Scraper(), {}
    with serve_banks(BANK, access_token_ttl=ttl) as banks:
        await link_many(router, custody, app_id, banks[BANK], n, synced=True)
        first = await first_access_tokens(router, custody)
        config = write_config(directory, settings, banks)
        profile = directory / "banks" / f"{BANK}.toml"
        profile.write_text(profile.read_text()
                           + "[refresh]\nmin_interval_seconds = 1\nmin_lifetime_percent = 0\n")
        args = ("--concurrency", str(concurrency), "--lease-seconds", str(lease_seconds),
                *worker_args)
        kills = 0
        async with httpx.AsyncClient() as http:
            with Workers(config) as fleet:
                procs = []
                for _ in range(workers):
                    port = _free_port()
                    proc = fleet.start(*args, "--metrics-port", str(port))
                    ports[proc.pid] = port
                    procs.append(proc)
                # The clock starts once the fleet refreshes (interpreters take a while to
                # boot on a loaded machine); bounded like everything else here.
                boot = time.monotonic() + 60
                while time.monotonic() < boot:
                    await scraper.scrape(http, ports)
                    if scraper.total("aggregator_worker_refreshes_total") > 0:
                        break
                    await asyncio.sleep(0.25)
                started = time.monotonic()
                next_kill = started + kill_every * rng.uniform(0.75, 1.25)
                while (now := time.monotonic()) < started + duration:
                    await scraper.scrape(http, ports)
                    if now >= next_kill:
                        victim = procs.pop(rng.randrange(len(procs)))
                        victim.send_signal(signal.SIGKILL)
                        await asyncio.to_thread(victim.wait, 10)
                        ports.pop(victim.pid, None)
                        kills += 1
                        port = _free_port()
                        fresh = fleet.start(*args, "--metrics-port", str(port))
                        ports[fresh.pid] = port
                        procs.append(fresh)
                        next_kill = now + kill_every * rng.uniform(0.75, 1.25)
                    await asyncio.sleep(min(0.5, max(0.05, next_kill - time.monotonic())))
                elapsed = time.monotonic() - started
                await scraper.scrape(http, ports)
                fleet.stop_all()
                # One clean worker takes the dead ones' rows over once their leases end.
                fleet.procs.clear()
                fleet.start(*args)

                async def settled() -> bool:
                    found = await states(router, custody, banks, first)
                    return not any(s.leased or s.in_flight for s in found.values())

                await wait_for(settled, 4 * lease_seconds + 30, every=0.5)
                fleet.stop_all()
        final = await states(router, custody, banks, first)
    return ChaosResult(
        credentials=n, duration=elapsed, kills=kills,
        refreshes=int(scraper.total("aggregator_worker_refreshes_total")),
        window_sum=scraper.total("aggregator_worker_uncommitted_seconds_sum"),
        window_count=int(scraper.total("aggregator_worker_uncommitted_seconds_count")),
        latency_sum=scraper.total("aggregator_worker_refresh_duration_seconds_sum"),
        latency_count=int(scraper.total("aggregator_worker_refresh_duration_seconds_count")),
        lost=sum(s.status is ConnectionStatus.REAUTH_REQUIRED for s in final.values()),
        unflagged=sum(s.status is ConnectionStatus.ACTIVE and not s.refresh_live
                      for s in final.values()),
        leases_left=sum(s.leased or s.in_flight for s in final.values()),
        workers=workers,
    )


def report(result: ChaosResult) -> str:
    ratio = result.lost_per_kill / result.lower_bound if result.lower_bound else 0.0
    print(f"credentials: {result.credentials}, workers: {result.workers}, "
          f"{result.duration:.0f} s, kills: {result.kills}")
    print(f"refreshes: {result.refreshes} ({result.rate:.1f}/s; "
          f"{result.rate / result.workers:.1f}/s per worker)")
    print(f"answered-but-uncommitted window: {result.window * 1000:.2f} ms mean "
          f"over {result.window_count} refreshes")
    print(f"lost grants: {result.lost} (flagged reauth_required), "
          f"{result.lost_per_kill:.2f} per kill; lower bound rate/worker x window = "
          f"{result.lower_bound:.3f} per kill (ratio {ratio:.2f})")
    print(f"with the token round trip ({result.latency * 1000:.1f} ms mean): "
          f"{result.lower_bound_sent:.3f} per kill")
    print(f"unflagged losses: {result.unflagged}; leases left: {result.leases_left}")
    return (f"RESULT lost_per_kill={result.lost_per_kill:.3f} "
            f"window_ms={result.window * 1000:.3f} lower_bound_per_kill={result.lower_bound:.3f} "
            f"lost_vs_lower_bound={ratio:.2f} "
            f"lower_bound_with_round_trip={result.lower_bound_sent:.3f} "
            f"refreshes_per_s={result.rate:.1f} "
            f"kills={result.kills} unflagged_losses={result.unflagged} "
            f"leases_left={result.leases_left}")


async def _main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import _postgres

    from aggregator.applications import create_application
    from aggregator.custody import region_custody
    from aggregator.datakeys import SealLedger
    from aggregator.settings import RegionSettings
    from aggregator.store import upgrade
    from vault import Envelope, LocalKeyringConfig, open_provider

    url = os.environ.get("AGGREGATOR_BENCH_POSTGRES_URL",
                         "postgresql+psycopg://postgres@127.0.0.1:5432")
    database = "aggregator_bench"
    schema, bound = _postgres.create_schema(url, database)
    directory = Path(tempfile.mkdtemp(prefix="chaos-bench-"))
    settings = Settings(data_dir=directory, regions={
        "eu": RegionSettings("eu", bound, LocalKeyringConfig(directory / "keys", "eu"))})
    router = RegionRouter(settings)
    provider = open_provider(settings.region("eu").keys)
    try:
        await upgrade(router.engine("eu"))
        provider.ensure_kek()
        ledger = SealLedger(router.engine("eu"))
        custody = await region_custody(router, "eu", Envelope(provider, seal_counter=ledger),
                                       ledger)
        app_id, _ = await create_application(router, "Chaos", [])
        result = await run_chaos(
            router, custody, app_id, settings, directory, workers=args.workers,
            rate=args.rate, ttl=args.ttl, duration=args.duration, kill_every=args.kill_every,
            seed=args.seed, lease_seconds=args.lease_seconds,
            worker_args=("--commit-before-send",) if args.commit_before_send else ())
        print(report(result))
    finally:
        await router.dispose()
        _postgres.drop_schema(url, database, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=80.0, help="target refreshes per second")
    parser.add_argument("--ttl", type=int, default=3, help="access token lifetime (s)")
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--kill-every", type=float, default=3.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lease-seconds", type=float, default=15.0,
                        help="the workers' lease (a killed worker's rows return after it)")
    parser.add_argument("--commit-before-send", action=argparse.BooleanOptionalAction,
                        default=False, help="the workers' setting (compare both)")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
