"""The `aggregator` command line.

Each sub-command lives in its own module under `aggregator.commands` and exposes
``register(subparsers)``; this module only composes them, so adding a command never
touches another one's code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from aggregator.errors import GatewayError
from connectors.errors import ConnectorError
from vault.errors import VaultError

#: Modules under ``aggregator.commands`` that contribute sub-commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "demo", "dev", "keys", "migrate", "apps", "serve", "worker", "erase", "banks", "sandbox",
    "audit", "operators",
)


#: Examples shown under ``--help`` of commands whose module gives none of its own.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "demo": ("aggregator demo", "aggregator demo --headless"),
    "keys": ("aggregator keys init", "aggregator keys status", "aggregator keys rotate --rewrap"),
    "keys init": ("aggregator keys init", "aggregator keys init --region eu"),
    "keys status": ("aggregator keys status", "aggregator keys status --region us --json"),
    "keys rotate": ("aggregator keys rotate --region eu",
                    "aggregator keys rotate --region eu --rewrap --retire"),
    "keys rewrap": ("aggregator keys rewrap --region eu --retire",),
    "migrate": ("aggregator migrate", "aggregator migrate --region eu"),
    "serve": ("aggregator serve --port 8000",
              "aggregator serve --host 0.0.0.0 --port 8000 --log-format json   # in a container"),
    "worker": ("aggregator worker", "aggregator worker --metrics-port 9100 --log-format json"),
    "erase": ("aggregator erase usr_eu_…", "aggregator erase usr_eu_… --wait",
              "aggregator erase --status era_eu_…"),
    "banks": ("aggregator banks list", "aggregator banks check sandbox-eu"),
    "banks check": ("aggregator banks check sandbox-eu",
                    "aggregator banks check my-bank --timeout 30"),
    "sandbox-bank": ("aggregator sandbox-bank", "aggregator sandbox-bank --port 8601",
                     "aggregator sandbox-bank --mode fapi2 --port 8610"),
    "audit": ("aggregator audit verify",),
    "audit verify": ("aggregator audit verify", "aggregator audit verify --region eu"),
}


def _add_examples(parser: argparse.ArgumentParser, path: str = "") -> None:
    if path and not (parser.epilog and "examples:" in parser.epilog) and path in EXAMPLES:
        parser.epilog = "examples:\n" + "".join(f"  {e}\n" for e in EXAMPLES[path]) + (
            f"\n{parser.epilog}" if parser.epilog else "")
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _add_examples(sub, f"{path} {name}".strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description="Open-banking data aggregation gateway.",
        epilog="examples:\n  aggregator demo --headless\n  aggregator dev\n"
               "  aggregator apps create Budgetly --redirect-uri https://app.example/linked\n"
               "  aggregator COMMAND --help\n\ndocs: README.md and docs/ in the source tree",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aggregator {_version()}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings file (TOML); default: $AGGREGATOR_CONFIG or ./aggregator.toml if present",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"aggregator.commands.{name}")
        module.register(subparsers)
    _add_examples(parser)
    return parser


def _version() -> str:
    try:
        return version("aggregator")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `aggregator`: help, not a usage error
        parser.print_help()
        return 0
    try:
        result: int = args.handler(args)
    except (GatewayError, VaultError, ConnectorError) as exc:
        # Our errors carry a message meant for the operator and never hold secrets.
        print(f"aggregator: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `aggregator apps list --json | head`: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
