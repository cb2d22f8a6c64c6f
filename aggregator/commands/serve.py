"""`aggregator serve [--host H] [--port P]`: run the gateway's HTTP API under uvicorn.

Everything is checked before the port opens: the settings, every bank profile and the
credentials of those in served regions, each region's schema (at the migration head)
and key provider (the KEK must exist: the region's pepper is unwrapped at start-up).
Any failure exits with the error, naming the file, region or setting at fault.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from aggregator.bank_profiles import check_profiles
from aggregator.errors import ConfigError
from aggregator.http import configure_logging
from aggregator.http.app import create_app, open_services
from aggregator.http.serving import base_url, bind, http_implementation, serve_forever
from aggregator.settings import Settings, load_settings


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on "
                       "(default %(default)s; put a TLS-terminating proxy in front)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default %(default)s)")
    serve.add_argument(
        "--reuse-port", action="store_true",
        help="set SO_REUSEPORT, to run one process per core on the same port",
    )
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["console", "json"], default=None,
                       help="console (readable) or json (one object per line); default: "
                       "console on a terminal, json otherwise")
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config) if args.config else None)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port")
    if args.reuse_port and settings.rate_limits.enabled and \
            settings.rate_limits.backend == "memory":
        # Each process would grant the whole budget: one per core multiplies every limit.
        raise ConfigError("--reuse-port runs several gateway processes; rate_limits.backend "
                          "'memory' counts per process: use database or redis")
    check_profiles(settings)  # before anything else: a typo should not cost a DB round trip
    configure_logging(args.log_level, log_format=args.log_format)
    asyncio.run(run(settings, args.host, args.port, reuse_port=args.reuse_port))
    return 0


async def run(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
    # open_services installs the Link flow and the sync job, on settings.public_url.
    async with open_services(settings) as services:
        sock = bind(host, port, reuse_port=reuse_port)
        app = create_app(settings, services=services)
        print(f"aggregator gateway on {base_url(sock)} (regions {', '.join(settings.regions)}; "
              f"http {http_implementation()})", file=sys.stderr, flush=True)
        await serve_forever(app, sock)
