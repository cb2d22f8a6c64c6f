"""The `aggregator` command line.

Each sub-command lives in its own module under `aggregator.commands` and exposes
``register(subparsers)``; this module only composes them, so adding a command never
touches another one's code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from aggregator.errors import GatewayError
from connectors.errors import ConnectorError
from vault.errors import VaultError

#: Modules under ``aggregator.commands`` that contribute sub-commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "demo", "keys", "migrate", "apps", "serve", "worker", "erase", "banks", "sandbox",
    "audit", "operators",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description="Open-banking data aggregation gateway.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings file (TOML); default: $AGGREGATOR_CONFIG or ./aggregator.toml if present",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"aggregator.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except (GatewayError, VaultError, ConnectorError) as exc:
        # Our errors carry a message meant for the operator and never hold secrets.
        print(f"aggregator: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
