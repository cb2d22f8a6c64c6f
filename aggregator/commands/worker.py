"""`aggregator worker`: keep every connection's tokens fresh (docs/architecture.md, "Refreshing").

Run any number of these, on any machines, against the same region databases: row leases
are the only coordination. Stops gracefully on SIGTERM/SIGINT within
``--shutdown-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from aggregator.errors import ConfigError
from aggregator.settings import load_settings


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser("worker", help="run a token-refresh worker")
    add_arguments(worker)
    worker.set_defaults(handler=_worker)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--concurrency", type=int, default=16, help="refreshes in flight (default %(default)s)")
    add("--per-bank", type=int, default=8,
        help="refreshes in flight per bank (default %(default)s)")
    add("--batch", type=int, default=32, help="credentials per lease query (default %(default)s)")
    add("--lease-seconds", type=float, default=15.0,
        help="lease length, kept alive by a heartbeat (default %(default)s)")
    add("--poll-seconds", type=float, default=1.0,
        help="pause when nothing is due (default %(default)s)")
    add("--max-interval-hours", type=float, default=24.0,
        help="refresh at least this often, even long-lived tokens (default %(default)s)")
    add("--shutdown-timeout", type=float, default=10.0,
        help="seconds to drain after SIGTERM (default %(default)s)")
    add("--breaker-threshold", type=int, default=5,
        help="consecutive failures that open a bank's breaker (default %(default)s)")
    add("--breaker-cool-down", type=float, default=10.0,
        help="seconds before a half-open probe (default %(default)s)")
    add("--backoff-base", type=float, default=1.0, help="first retry delay (default %(default)s)")
    add("--metrics-port", type=int, default=None,
        help="serve Prometheus /metrics on METRICS_HOST:PORT (default: off)")
    add("--metrics-host", default="127.0.0.1",
        help="address for /metrics (default %(default)s; 0.0.0.0 in a container, so that "
        "Prometheus on the container network can scrape it)")
    add("--owner", default=None, help="lease owner name (default host:pid)")
    add("--commit-before-send", action=argparse.BooleanOptionalAction, default=False,
        help="commit answered rotations before sending more refreshes: a smaller window "
             "for a killed worker to lose grants in, fewer sends overlapping commits "
             "(default %(default)s)")
    add("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add("--log-format", choices=["console", "json"], default=None,
        help="console (readable) or json (one object per line); default: console on a "
        "terminal, json otherwise")


def _worker(args: argparse.Namespace) -> int:
    from aggregator.http import configure_logging
    from aggregator.worker.process import WorkerOptions, run_worker
    from aggregator.worker.runner import WorkerConfig

    for name in ("concurrency", "per_bank", "batch"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if args.metrics_port is not None and not 0 < args.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port {args.metrics_port} is not a TCP port")
    settings = load_settings(Path(args.config) if args.config else None)
    configure_logging(args.log_level, log_format=args.log_format)
    config = WorkerConfig(
        concurrency=args.concurrency, batch=args.batch, lease_seconds=args.lease_seconds,
        poll_seconds=args.poll_seconds, shutdown_timeout=args.shutdown_timeout,
    )
    options = WorkerOptions(
        per_bank=args.per_bank, max_interval=timedelta(hours=args.max_interval_hours),
        breaker_threshold=args.breaker_threshold, breaker_cool_down=args.breaker_cool_down,
        backoff_base=args.backoff_base, metrics_port=args.metrics_port,
        metrics_host=args.metrics_host, owner=args.owner,
        commit_before_send=args.commit_before_send,
    )
    asyncio.run(run_worker(settings, config, options))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m aggregator.worker``: the command alone, until the CLI lists it."""
    parser = argparse.ArgumentParser(prog="aggregator worker")
    parser.add_argument("--config", metavar="FILE", help="settings file (TOML)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return _worker(args)
