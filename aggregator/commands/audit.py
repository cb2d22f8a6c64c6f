"""`aggregator audit verify [--region R]`: check each region's audit hash chain.

Prints one line per region; a broken chain names the first bad event and what is
wrong with it, and the command exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from aggregator.audit import ChainReport, verify
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter, require_head


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="inspect the regions' audit trails")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("verify", help="walk each region's hash chain")
    check.add_argument("--region", help="only this region")
    check.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config) if args.config else None)
    names = [settings.region(args.region).name] if args.region else list(settings.regions)
    reports = asyncio.run(_run(settings, names))
    for report in reports:
        print(describe(report))
    return 0 if all(r.ok for r in reports) else 1


async def _run(settings: Settings, names: list[str]) -> list[ChainReport]:
    async with RegionRouter(settings) as router:
        reports = []
        for name in names:
            await require_head(router.engine(name), name)
            reports.append(await verify(router.engine(name), name))
        return reports


def describe(report: ChainReport) -> str:
    if report.ok:
        return f"{report.region}: {report.events} events, chain intact"
    where = f"event {report.broken_id} (seq {report.broken_seq})" if report.broken_id else (
        f"head (seq {report.broken_seq})"
    )
    return (
        f"{report.region}: BROKEN at {where} after {report.events} intact events: "
        f"{report.problem}"
    )
