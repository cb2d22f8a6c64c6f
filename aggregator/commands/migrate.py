"""`aggregator migrate [--region R]`: bring each region's database to the latest schema.

Each region is upgraded in its own transaction and then gets its pepper (created on the
first run, which needs the region's KEK: run `aggregator keys init` first). Then data
steps that need the region's keys run, resumably: clear account names left by earlier
releases are sealed (:func:`aggregator.account_names.seal_clear_names`), and so are
applications' event URLs (:func:`aggregator.events.endpoints.seal_clear_urls`).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from aggregator.account_names import seal_clear_names
from aggregator.custody import region_custody
from aggregator.datakeys import SealLedger
from aggregator.events.endpoints import seal_clear_urls
from aggregator.keyring import envelope_for
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter, head_revision, upgrade


def register(subparsers: Any) -> None:
    migrate = subparsers.add_parser(
        "migrate", help="upgrade every region's database to the latest schema"
    )
    migrate.add_argument("--region", help="only this region")
    migrate.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config) if args.config else None)
    names = [settings.region(args.region).name] if args.region else list(settings.regions)
    return asyncio.run(_run(settings, names))


async def _run(settings: Settings, names: list[str]) -> int:
    head = head_revision()
    async with RegionRouter(settings) as router:
        for name in names:
            revision = await upgrade(router.engine(name), region=name)
            ledger = SealLedger(router.engine(name))
            envelope = envelope_for(settings.region(name), settings, seal_counter=ledger)
            try:
                custody = await region_custody(router, name, envelope, ledger)  # the pepper
                sealed = await seal_clear_names(router, custody)
                await seal_clear_urls(router, custody)
            finally:
                envelope.provider.close()
            state = "head" if revision == head else f"head is {head}"
            print(f"{name}: at revision {revision} ({state}); pepper ready"
                  + (f"; sealed {sealed} account names" if sealed else ""))
    return 0
