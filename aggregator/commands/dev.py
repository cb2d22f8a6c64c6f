"""``aggregator dev``: gateway, worker and sandbox banks in one terminal, for development.

It prepares the regions (``keys init``, ``migrate``), then runs the sandbox banks
(``sandbox-bank``: the plain one on 8600, UK Open Banking on 8601, FAPI 2.0 on 8610,
as the built-in profiles name them), ``serve`` and ``worker`` as child processes, with the two
development opt-ins set for them only: ``AGGREGATOR_BANKS_SANDBOX=true`` (the built-in
sandbox banks are offered) and ``AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK=true`` (the
gateway may call a bank over plain http on 127.0.0.1). Every line a child writes is
shown with its name in front, logs in the readable console format. Ctrl-C (or SIGTERM)
stops them all; if one of them exits, the others are stopped too and ``dev`` exits with
its status.

Children rather than one event loop: each is exactly the process a deployment runs, so
what works under ``dev`` works with one terminal or one container per process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

from aggregator.commands.output import examples
from aggregator.errors import ConfigError

#: The port the built-in sandbox profiles name in their issuer (connectors/banks/).
BANK_PORT = 8600
#: Every sandbox bank a built-in profile names: child name -> (``--mode``, port). A new
#: sandbox profile whose bank needs another mode or port is added here.
SANDBOX_BANKS = {"bank": ("oauth2", BANK_PORT), "obie": ("obie", 8601), "fapi2": ("fapi2", 8610)}
#: What ``dev`` sets for its children (and nothing else): the development opt-ins.
DEV_ENVIRONMENT = {
    "AGGREGATOR_BANKS_SANDBOX": "true",
    "AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK": "true",
}
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
_COLOURS = {"bank": "35", "obie": "35", "fapi2": "35", "gateway": "36", "worker": "33"}


def register(subparsers: Any) -> None:
    dev = subparsers.add_parser(
        "dev", help="run gateway, worker and sandbox bank together (development only)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog=examples("aggregator dev", "aggregator dev --port 8080",
                        "aggregator --config dev.toml dev --log-level debug"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dev.add_argument("--port", type=int, default=8000,
                     help="the gateway's port on 127.0.0.1 (default %(default)s)")
    dev.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    dev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    taken = {port for _, port in SANDBOX_BANKS.values()}
    if not 0 < args.port <= 65535 or args.port in taken:
        raise ConfigError(f"--port {args.port} is not a free TCP port for the gateway "
                          f"({', '.join(map(str, sorted(taken)))} are the sandbox banks')")
    env = {**os.environ, **DEV_ENVIRONMENT, "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "aggregator", *(["--config", args.config] if args.config
                                                   else [])]
    for step in (["keys", "init"], ["migrate"]):
        done = subprocess.run([*base, *step], env=env, check=False)  # noqa: S603 - our argv
        if done.returncode != 0:
            return done.returncode
    children = {
        **{name: [*base, "sandbox-bank", "--mode", mode, "--port", str(port)]
           for name, (mode, port) in SANDBOX_BANKS.items()},
        "gateway": [*base, "serve", "--port", str(args.port), "--log-format", "console",
                    "--log-level", args.log_level],
        "worker": [*base, "worker", "--log-format", "console", "--log-level", args.log_level],
    }
    try:
        return asyncio.run(_supervise(children, env, f"http://127.0.0.1:{args.port}"))
    except KeyboardInterrupt:
        return 130


async def _supervise(children: dict[str, list[str]], env: dict[str, str], gateway: str
                     ) -> int:
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    width = max(len(n) for n in children)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    procs: dict[str, asyncio.subprocess.Process] = {}
    pumps = []
    try:
        for name, argv in children.items():
            procs[name] = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C is relayed once, as SIGTERM
            )
            tag = f"{name:<{width}} | "
            if colour:
                tag = f"\x1b[{_COLOURS.get(name, '0')}m{tag}\x1b[0m"
            pumps.append(asyncio.create_task(_pump(procs[name], tag)))
        exits = {name: asyncio.create_task(p.wait()) for name, p in procs.items()}
        ready = asyncio.create_task(_announce(gateway))
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*exits.values(), stopping],
                                     return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        ended = [n for n, t in exits.items() if t in done]
        code = 0
        if ended:
            code = procs[ended[0]].returncode or 1
            print(f"aggregator dev: {ended[0]} exited with status {procs[ended[0]].returncode}; "
                  "stopping the others", file=sys.stderr, flush=True)
        return code
    finally:
        await _stop_all(procs)
        for pump in pumps:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(pump, 2)


async def _pump(proc: asyncio.subprocess.Process, tag: str) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        sys.stdout.write(tag + line.decode(errors="replace"))
        sys.stdout.flush()


async def _announce(gateway: str) -> None:
    """Print what to do next once the gateway answers /readyz (bounded in time)."""
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{gateway}/readyz")).status_code == 200:
                    print(_next_steps(gateway), flush=True)
                    return
            await asyncio.sleep(0.5)
    print(f"aggregator dev: the gateway did not answer {gateway}/readyz within "
          f"{READY_TIMEOUT:.0f} s; see its lines above", file=sys.stderr, flush=True)


def _next_steps(gateway: str) -> str:
    return "\n".join([
        "",
        f"aggregator dev: ready. Gateway {gateway} (API docs {gateway}/openapi.json), "
        f"sandbox banks http://127.0.0.1:{BANK_PORT}, :{SANDBOX_BANKS['obie'][1]} (UK Open "
        f"Banking) and :{SANDBOX_BANKS['fapi2'][1]} (FAPI 2.0); user alice / alice-pass.",
        "  In another terminal: .venv/bin/aggregator apps create MyApp --redirect-uri "
        "http://127.0.0.1:3000/linked",
        "  Ctrl-C stops everything.",
        "",
    ])


async def _stop_all(procs: dict[str, asyncio.subprocess.Process]) -> None:
    live = [p for p in procs.values() if p.returncode is None]
    for proc in live:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    waits: Sequence[Any] = [asyncio.wait_for(p.wait(), STOP_TIMEOUT) for p in live]
    results = await asyncio.gather(*waits, return_exceptions=True)
    for proc, result in zip(live, results, strict=True):
        if isinstance(result, BaseException):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
