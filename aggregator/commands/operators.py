"""`aggregator operators create NAME --role viewer|admin`: an account for the console.

The password is asked for twice on a terminal, or read as the first line of standard
input when that is not a terminal (``--password-stdin`` demands the latter), so it never
appears in a process list or shell history. The account is written to every region
(:mod:`aggregator.operators` says why), so every region must be up.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any

from aggregator.commands.output import examples
from aggregator.errors import ConfigError
from aggregator.ids import OperatorId
from aggregator.models import OperatorRole
from aggregator.operators import check_name, check_password, create_operator
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter, require_head


def register(subparsers: Any) -> None:
    operators = subparsers.add_parser(
        "operators", help="manage operator console accounts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("aggregator operators create ada --role admin",
                        "echo \"$PASSWORD\" | aggregator operators create vic --role viewer "
                        "--password-stdin"),
    )
    actions = operators.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="create an operator account",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("aggregator operators create ada --role admin"),
    )
    create.add_argument("name", metavar="NAME", help="the sign-in name, e.g. ada")
    create.add_argument("--role", required=True, choices=[r.value for r in OperatorRole],
                        help="viewer: reads every page; admin: may also act")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input (first line)")
    create.set_defaults(handler=_create)


def _password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise ConfigError("--password-stdin: standard input held no password")
        return check_password(line)
    first = check_password(getpass.getpass("Password: "))
    if getpass.getpass("Repeat the password: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def _create(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    role = OperatorRole(args.role)
    password = _password(args.password_stdin)
    settings = load_settings(Path(args.config) if args.config else None)
    operator_id = asyncio.run(_run(settings, name, role, password))
    print(f"operator {operator_id} ({name}, {role.value}) created in regions "
          f"{', '.join(settings.regions)}")
    return 0


async def _run(settings: Settings, name: str, role: OperatorRole, password: str
               ) -> OperatorId:
    async with RegionRouter(settings) as router:
        for region in router.regions:
            await require_head(router.engine(region), region)
        return await create_operator(router, name, role, password)
