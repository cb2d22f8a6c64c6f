"""`aggregator keys init | status | rotate | rewrap`: the regions' key-encryption keys.

``rotate --region R`` adds a KEK version; with ``--rewrap`` it then rewraps every data
key and region secret of the region to it (progress bar on stderr), under the same lease
the worker's scheduled rotation takes (:mod:`aggregator.worker.rotation`), so the two
never rotate at once. ``rewrap`` resumes an interrupted rewrap without rotating again.
``--retire`` then raises the KEK's minimum decryption version to the newest version,
which is what makes wrapped keys in older backups unopenable; it refuses while any data
key or region secret still uses an older version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from aggregator import audit
from aggregator.commands import rotate_user
from aggregator.datakeys import key_versions, older_than
from aggregator.errors import SchemaOutOfDate
from aggregator.keyring import envelope_for
from aggregator.models.base import utcnow
from aggregator.settings import RegionSettings, Settings, load_settings
from aggregator.store import RegionRouter, require_head
from aggregator.worker import rotation
from vault import Envelope, KeyProvider

#: How long the command's lease lasts between batches (it renews after each one).
_LEASE = timedelta(minutes=5)


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="manage the regions' key-encryption keys")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    init = actions.add_parser("init", help="create each region's KEK if it does not exist")
    init.add_argument("--region", help="only this region")
    init.set_defaults(handler=_init)

    status = actions.add_parser(
        "status", help="show providers, KEK versions, data keys per version, schedule")
    status.add_argument("--region", help="only this region")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)

    rotate = actions.add_parser("rotate", help="add a new KEK version to one region")
    rotate.add_argument("--region", required=True)
    rotate.add_argument("--rewrap", action="store_true",
                        help="then rewrap every data key to the new version")
    _retire_and_batch(rotate)
    rotate.set_defaults(handler=_rotate)

    rewrap = actions.add_parser(
        "rewrap", help="rewrap one region's data keys to its newest KEK version")
    rewrap.add_argument("--region", required=True)
    _retire_and_batch(rewrap)
    rewrap.set_defaults(handler=_rewrap, rewrap=True)

    rotate_user.add_parser(actions)  # one user's data key, and a reseal of their values


def _retire_and_batch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retire", action="store_true",
                        help="then raise the minimum decryption version to the newest "
                             "version (refused while any key still uses an older one)")
    parser.add_argument("--batch", type=_positive, default=100, metavar="N",
                        help="data keys per provider call (default 100)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


def _envelopes(args: argparse.Namespace) -> dict[str, Envelope]:
    settings = _settings(args)
    names = [settings.region(args.region).name] if args.region else list(settings.regions)
    return {name: envelope_for(settings.regions[name], settings) for name in names}


def _init(args: argparse.Namespace) -> int:
    for name, env in _envelopes(args).items():
        env.provider.ensure_kek()
        st = env.provider.status()
        print(f"{name}: {st.provider} KEK {st.kek_id!r} ready (version {st.latest_version})")
        env.provider.close()
    return 0


# -- status ---------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    envelopes = _envelopes(args)
    report = {name: _describe(env) for name, env in envelopes.items()}
    asyncio.run(_add_database(settings, report))
    missing = [name for name, info in report.items() if not info["kek_versions"]]
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 1 if missing else 0
    for name, info in report.items():
        print(f"region {name}")
        for key, value in info.items():
            print(f"  {key.replace('_', ' ').replace('detail.', ''):<24} {_human(key, value)}")
    for name in missing:
        print(f"region {name} has no KEK yet: run `aggregator keys init --region {name}`")
    return 1 if missing else 0


def _describe(env: Envelope) -> dict[str, Any]:
    provider: KeyProvider = env.provider
    st = provider.status()
    cache = env.stats()
    provider.close()
    return {
        "provider": st.provider,
        "kek_id": st.kek_id,
        "kek_versions": list(st.versions),
        "latest_version": st.latest_version,
        "min_decryption_version": st.min_decryption_version,
        **{f"detail.{k}": v for k, v in sorted(st.details.items())},
        "cache_ttl_seconds": cache.ttl_seconds,
        "cache_max_keys": cache.max_size,
    }


async def _add_database(settings: Settings, report: dict[str, dict[str, Any]]) -> None:
    """Data keys per KEK version and the rotation schedule, from each region's database;
    a database not migrated yet (``keys init`` comes first) is said so, not an error."""
    async with RegionRouter(settings) as router:
        for name, info in report.items():
            region = settings.region(name)
            info["rotate_every"] = _duration(region.rotate_every)
            if not _exists(region):
                info["data_keys"] = "no database yet: run `aggregator migrate`"
                continue
            try:
                await require_head(router.engine(name), name)
            except SchemaOutOfDate as exc:
                info["data_keys"] = str(exc)
                continue
            versions = await key_versions(router, name)
            info["data_keys_by_version"] = {str(v): n for v, n in sorted(versions.items())}
            info["rewrap_pending"] = await older_than(router, name, info["latest_version"])
            row = await rotation.holder(router, name, info["kek_id"])
            # The row is created when a worker first looks, at the KEK's version then:
            # its time is a rotation only once the version moved past the first one.
            rotated = row is not None and row.version > min(info["kek_versions"] or [1])
            info["last_rotation"] = _when(row.rotated_at) if rotated and row else None
            info["next_rotation_due"] = _when(rotation.schedule_of(row, region.rotate_every))


def _exists(region: RegionSettings) -> bool:
    prefix = "sqlite+aiosqlite:///"
    if not region.database_url.startswith(prefix):
        return True
    return Path(region.database_url.removeprefix(prefix)).exists()


def _duration(every: timedelta | None) -> str:
    if every is None:
        return "off"
    if every % timedelta(weeks=1) == timedelta(0):
        return f"{every // timedelta(weeks=1)}w"
    if every % timedelta(days=1) == timedelta(0):
        return f"{every.days}d"
    return f"{every // timedelta(hours=1)}h"


def _human(key: str, value: Any) -> str:
    """A status value as an operator reads it: no ``None``, ``{}`` or Python lists."""
    if key == "last_rotation":
        return value or "never (still the first KEK version)"
    if key == "next_rotation_due":
        return value or "not scheduled ([keys] rotate_every is off)"
    if key == "data_keys_by_version":
        return ", ".join(f"version {v}: {n}" for v, n in value.items()) or "none yet"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    if value is None:
        return "-"
    return str(value)


def _when(at: datetime | None) -> str | None:
    return at.isoformat(timespec="seconds") if at else None


# -- rotate, rewrap, retire -------------------------------------------------------------


def _rotate(args: argparse.Namespace) -> int:
    return _run(args, rotate=True)


def _rewrap(args: argparse.Namespace) -> int:
    return _run(args, rotate=False)


def _run(args: argparse.Namespace, *, rotate: bool) -> int:
    settings = _settings(args)
    region = settings.region(args.region)
    envelope = envelope_for(region, settings)
    try:
        if rotate and not (args.rewrap or args.retire) and not _exists(region):
            return _rotate_only(region.name, envelope.provider)
        return asyncio.run(_leased(settings, region.name, envelope.provider, args,
                                   rotate=rotate))
    finally:
        envelope.provider.close()


def _rotate_only(region: str, provider: KeyProvider) -> int:
    version = provider.rotate()
    print(f"{region}: KEK {provider.kek_id!r} rotated to version {version}; existing data "
          "keys still open under older versions until rewrapped (the worker rewraps them, "
          f"or run `aggregator keys rewrap --region {region}`)")
    return 0


async def _leased(settings: Settings, region: str, provider: KeyProvider,
                  args: argparse.Namespace, *, rotate: bool) -> int:
    owner = f"operator:{socket.gethostname()[:40]}:{os.getpid()}"
    async with RegionRouter(settings) as router:
        await require_head(router.engine(region), region)
        status = await rotation.status_of(provider)
        row = await rotation.claim(router, region, provider, owner, now=_now(),
                                   lease=_LEASE, newest=status.latest_version)
        if row is None:
            held = await rotation.holder(router, region, provider.kek_id)
            raise rotation.LeaseHeld(region, held.lease_owner if held else None,
                                     held.lease_expires_at if held else None)
        try:
            newest = status.latest_version
            if rotate:
                newest = await asyncio.to_thread(provider.rotate)
                await rotation.record(router, region, provider.kek_id, newest, _now(),
                                      actor="operator")
                print(f"{region}: KEK {provider.kek_id!r} rotated to version {newest}")
            code = 0
            if args.rewrap:
                code = await _rewrap_all(router, region, provider, newest, args.batch, owner)
            if args.retire and code == 0:
                code = await _retire(router, region, provider, newest)
            elif not args.rewrap:
                print(f"{region}: data keys still open under older versions until rewrapped "
                      f"(the worker rewraps them, or `aggregator keys rewrap --region {region}`)")
            return code
        finally:
            await rotation.release(router, region, provider.kek_id, owner)


async def _rewrap_all(router: RegionRouter, region: str, provider: KeyProvider, newest: int,
                      batch: int, owner: str) -> int:
    pending = await older_than(router, region, newest)
    console = Console(file=sys.stderr)
    columns = (TextColumn(f"{region}: rewrapping to KEK v{newest}"), BarColumn(),
               MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("rewrap", total=pending)

        async def keep() -> bool:
            return await rotation.renew(router, region, provider.kek_id, owner, _LEASE)

        totals = await rotation.rewrap_pass(
            router, region, provider, newest=newest, batch=batch, keep_lease=keep,
            progress=lambda t: bar.update(task, completed=min(t.read, pending)),
        )
    left = await older_than(router, region, newest)
    print(f"{region}: {totals.rewrapped} keys rewrapped to KEK version {newest}, "
          f"{totals.skipped} skipped (erased or changed meanwhile), {len(totals.failed)} "
          f"failed; {left} still below version {newest}")
    if totals.failed:
        shown = ", ".join(totals.failed[:5])
        print(f"aggregator: error: region {region}: the provider refused to rewrap data keys "
              f"{shown}{' …' if len(totals.failed) > 5 else ''}", file=sys.stderr)
        return 1
    return 0 if left == 0 else 1


async def _retire(router: RegionRouter, region: str, provider: KeyProvider,
                  newest: int) -> int:
    left = await older_than(router, region, newest)
    if left:
        print(f"aggregator: error: region {region}: {left} data keys or region secrets still "
              f"use KEK versions below {newest}; nothing was retired. Run `aggregator keys "
              f"rewrap --region {region}` first", file=sys.stderr)
        return 2
    await asyncio.to_thread(provider.set_min_decryption_version, newest)
    async with router.session(region) as session, session.begin():
        await audit.record(session, actor="operator", action="kek.versions_retired")
    print(f"{region}: KEK {provider.kek_id!r} versions below {newest} retired "
          f"(minimum decryption version {newest}); backups holding keys wrapped under them "
          "can no longer be opened")
    return 0


def _now() -> datetime:
    return utcnow()
