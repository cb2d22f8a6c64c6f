"""`aggregator worker`: its arguments, and refusing nonsense before touching anything."""

from __future__ import annotations

import argparse

import pytest

from aggregator.commands import worker
from aggregator.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aggregator")
    parser.add_argument("--config")
    worker.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_worker_command_registers_with_its_defaults() -> None:
    args = _parser().parse_args(["worker", "--concurrency", "4", "--metrics-port", "9464"])
    assert args.handler is not None
    assert (args.concurrency, args.per_bank, args.lease_seconds) == (4, 8, 15.0)
    assert args.metrics_port == 9464


@pytest.mark.parametrize(("flag", "value"), [("--concurrency", "0"), ("--per-bank", "-1"),
                                             ("--metrics-port", "70000")])
def test_worker_command_refuses_nonsense_before_starting(flag: str, value: str) -> None:
    args = _parser().parse_args(["worker", flag, value])
    with pytest.raises(ConfigError):
        args.handler(args)
