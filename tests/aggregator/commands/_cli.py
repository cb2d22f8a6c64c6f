"""Run ``aggregator`` sub-commands in tests through a parser built from their `register`.

A command's module is tested alone: the parser has the global ``--config`` and only the
sub-commands given, so a test proves what the module registers, not the whole CLI.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from types import ModuleType

__all__ = ["command_runner"]


def command_runner(*modules: ModuleType, prefix: tuple[str, ...] = ()) -> Callable[..., int]:
    """``run(*argv) -> exit status`` for the sub-commands ``modules`` register; ``prefix``
    goes before ``argv`` (``("banks",)`` lets a test write ``run("check", ID)``)."""

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="aggregator")
        parser.add_argument("--config")
        commands = parser.add_subparsers(dest="command", required=True)
        for module in modules:
            module.register(commands)
        args = parser.parse_args([*prefix, *argv])
        result: int = args.handler(args)
        return result

    return run
