"""`aggregator erase USER_ID [--wait]` and `aggregator erase --status`.

The operator's side of data-subject erasure (the API's is ``DELETE /v1/users/{id}``):
the request is made on behalf of the user's own application, exactly as if the app had
asked, and is idempotent the same way. Without ``--wait`` the workers complete it
(:func:`aggregator.erasure.resume_pending`); with it, this process runs the job and
prints each step as it completes. ``--status`` lists every open request with its
statutory deadline, overdue ones marked, and exits 1 when any is overdue (for cron).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import select

from aggregator.erasure import ErasureJob, open_requests, request_erasure
from aggregator.erasure.requests import ErasureConfig, overdue, user_digest
from aggregator.errors import ConfigError, MalformedId
from aggregator.http.app import open_services
from aggregator.ids import ApplicationId, parse_id
from aggregator.models import ErasureRequest, ErasureState, User
from aggregator.models.base import utcnow
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter, require_head
from aggregator.sync import BankDirectory

_STEPS: list[ErasureState] = [s for s in ErasureState if s is not ErasureState.REQUESTED]
_DESCRIBE = {
    ErasureState.STOPPED: "new activity stopped (connections revoked locally)",
    ErasureState.REVOKED: "grants revoked at the banks (failures recorded)",
    ErasureState.DELETED: "rows deleted",
    ErasureState.SHREDDED: "data key destroyed (crypto-shredded)",
    ErasureState.COMPLETED: "receipt written",
}


def register(subparsers: Any) -> None:
    erase = subparsers.add_parser(
        "erase", help="erase a user completely (GDPR Art. 17), or list open requests",
    )
    erase.add_argument("user_id", nargs="?", help="the user to erase (usr_<region>_…)")
    erase.add_argument("--wait", action="store_true",
                       help="run the erasure here and show its progress")
    erase.add_argument("--status", action="store_true",
                       help="list open erasure requests and their deadlines")
    erase.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    if bool(args.status) == bool(args.user_id):
        raise ConfigError("give either USER_ID or --status")
    settings = load_settings(Path(args.config) if args.config else None)
    if args.status:
        return asyncio.run(_status(settings))
    parse_id(args.user_id, kind="usr", regions=settings.regions)
    return asyncio.run(_erase(settings, args.user_id, wait=bool(args.wait)))


async def _erase(settings: Settings, user_id: str, *, wait: bool) -> int:
    async with open_services(settings, bank_clients=BankDirectory) as services:
        router = services.router
        region = router.region_of(user_id)
        custody = services.custody[region]
        app_id = await _owner(router, region, user_id, user_digest(custody, user_id))
        config = ErasureConfig.from_settings(settings)
        request = await request_erasure(router, custody, user_id, app_id, config=config,
                                        actor="operator")
        if request is None:
            raise MalformedId(f"no user {user_id} in region {region}")
        print(f"{request.id}: {request.state.value}, deadline "
              f"{request.deadline_at:%Y-%m-%d %H:%M} UTC")
        if not wait:
            if not request.state.done:
                print("the workers complete it; follow it with `aggregator erase --status`")
            return 0
        job = ErasureJob(router, services.custody, services.banks, config, actor="operator")

        def progress(state: ErasureState) -> None:
            if state in _DESCRIBE:
                print(f"[{_STEPS.index(state) + 1}/{len(_STEPS)}] {_DESCRIBE[state]}",
                      flush=True)

        state = await job.run(request.id, progress=progress)
        print(f"{request.id}: {state.value}")
        return 0 if state.done else 1


async def _owner(
    router: RegionRouter, region: str, user_id: str, digest: bytes
) -> ApplicationId:
    """The application the user belongs to, or whose request already erased the user."""
    async with router.reader(region) as session:
        app = (await session.execute(
            select(User.application_id).where(User.id == user_id)
        )).scalar_one_or_none()
        if app is None:
            app = (await session.execute(
                select(ErasureRequest.application_id)
                .where(ErasureRequest.user_digest == digest)
            )).scalar_one_or_none()
    if app is None:
        raise MalformedId(f"no user {user_id} in region {region}")
    return ApplicationId(app)


async def _status(settings: Settings) -> int:
    now, late = utcnow(), 0
    async with RegionRouter(settings) as router:
        for region in router.regions:
            await require_head(router.engine(region), region)
            requests = await open_requests(router, region)
            print(f"{region}: {len(requests)} open")
            for request in requests:
                mark = "OVERDUE " if overdue(request, now) else ""
                late += bool(mark)
                print(f"  {mark}{request.id} {request.state.value} requested "
                      f"{request.requested_at:%Y-%m-%d} deadline "
                      f"{request.deadline_at:%Y-%m-%d %H:%M} UTC runs={request.runs}"
                      + (f" last_error={request.last_error}" if request.last_error else ""))
    return 1 if late else 0
