"""`aggregator apps create NAME [--redirect-uri URI ...]`: register a calling application.

The API key is printed once, on stdout, and only its digest is stored (in every region,
see :mod:`aggregator.applications`); lose it and create another application (key
rotation is a later command).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from aggregator.applications import create_application
from aggregator.errors import ConfigError
from aggregator.ids import ApplicationId
from aggregator.redirect_uris import redirect_uri_problem
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter, require_head


def register(subparsers: Any) -> None:
    apps = subparsers.add_parser("apps", help="manage the applications that call the API")
    actions = apps.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="register an application and print its API key (shown once)"
    )
    create.add_argument("name", metavar="NAME", help="a display name, e.g. Budgetly")
    create.add_argument(
        "--redirect-uri", action="append", default=[], metavar="URI",
        help="where Link may send users back to (exact match; repeatable); https, or "
             "http on a loopback address",
    )
    create.set_defaults(handler=_create)


def check_redirect_uri(uri: str) -> str:
    """Refuse redirect URIs that would leak the outcome (RFC 9700 §4.1.1, §2.1)."""
    problem = redirect_uri_problem(uri)
    if problem:
        raise ConfigError(f"--redirect-uri {uri!r}: {problem}")
    return uri


def _create(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise ConfigError("NAME must be 1-200 printable characters")
    uris = [check_redirect_uri(u) for u in args.redirect_uri]
    settings = load_settings(Path(args.config) if args.config else None)
    app_id, key = asyncio.run(_run(settings, name, uris))
    print(f"application {app_id} ({name}) created in regions {', '.join(settings.regions)}")
    print(f"API key (shown once, store it now): {key}")
    return 0


async def _run(settings: Settings, name: str, uris: list[str]) -> tuple[ApplicationId, str]:
    async with RegionRouter(settings) as router:
        for region in router.regions:
            await require_head(router.engine(region), region)
        return await create_application(router, name, uris)
