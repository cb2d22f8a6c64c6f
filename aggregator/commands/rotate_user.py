"""`aggregator keys rotate-user USER_ID`: a new data key for one user, values resealed.

What :class:`vault.SealLimitReached` asks for: the user gets a new data key at once and
every value sealed under the old one is resealed in batches (aggregator.reseal), with a
count on stderr. Interrupted, the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from aggregator.commands.output import examples
from aggregator.custody import open_custody
from aggregator.errors import ConfigError, InvalidId
from aggregator.ids import UserId, parse_id
from aggregator.reseal import reseal_user
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter, require_head


def add_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "rotate-user", help="give one user a new data key and reseal their values "
                            "(resumable; what a seal-limit error asks for)",
        epilog=examples("aggregator keys rotate-user usr_eu_01j…",
                        "aggregator keys rotate-user usr_eu_01j… --batch 50   # smaller steps"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("user_id", metavar="USER_ID")
    parser.add_argument("--batch", type=int, default=200, metavar="N",
                        help="rows per transaction (default 200)")
    parser.set_defaults(handler=_rotate_user)


def _rotate_user(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config) if args.config else None)
    try:
        region = parse_id(args.user_id, kind="usr", regions=tuple(settings.regions)).region
    except InvalidId:
        raise ConfigError(f"{args.user_id!r} is not a user id of this deployment") from None
    assert region is not None
    return asyncio.run(rotate_user(settings, region, UserId(args.user_id), args.batch))


async def rotate_user(settings: Settings, region: str, user_id: UserId, batch: int) -> int:
    async with RegionRouter(settings) as router:
        await require_head(router.engine(region), region)
        custody = await open_custody(router, settings)
        try:
            keys = custody[region]
            async with router.session(region) as session, session.begin():
                wrapped = await keys.data_keys.rotate(session, user_id)
            print(f"{user_id}: data key now {wrapped.dek_id}; resealing", file=sys.stderr)
            done = await reseal_user(router, keys, user_id, batch=batch,
                                     progress=lambda n: print(f"  {n} values resealed",
                                                              file=sys.stderr))
        finally:
            for each in custody.values():
                each.close()
    print(f"{user_id}: {done.resealed} values resealed; previous key "
          + ("dropped" if done.finished else "still kept (run again)"))
    return 0 if done.finished else 1
