"""Applications and their API keys, replicated to every region.

Decision: an application is global configuration, not a region's data. Its row (name,
redirect URIs) and its keys' digests are written with the same id to every configured
region, so a request is authenticated by whichever region it is routed to, without a
global database and without any region reading another. They carry no personal data,
which is what lets them be copied across regions. Application ids therefore carry no
region (``app_…``, see :mod:`aggregator.ids`), and the residency guard lets them pass.

Creating an application flushes in every region before committing in any, so a
constraint failure anywhere writes nothing; a crash between commits leaves some regions
without the application, and re-running :func:`replicate_application` repairs that.
A region added later gets existing applications the same way.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Sequence
from contextlib import AsyncExitStack

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.errors import InvalidApiKey
from aggregator.ids import ApplicationId, new_id, secret_digest
from aggregator.models import ApiKey, Application
from aggregator.models.base import utcnow
from aggregator.store.router import RegionRouter

KEY_KIND = "agk"


def new_api_key() -> tuple[str, str, bytes]:
    """A fresh key ``agk_{prefix}_{secret}``, its public prefix and its digest."""
    prefix = base64.b32encode(secrets.token_bytes(5)).decode().lower()  # 8 characters
    key = f"{KEY_KIND}_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, secret_digest(key)


async def create_application(
    router: RegionRouter, name: str, redirect_uris: Sequence[str]
) -> tuple[ApplicationId, str]:
    """Register an application in every region; returns its id and its first API key.

    The key is shown once: only its digest is kept.
    """
    app_id = new_id("app")
    key, prefix, digest = new_api_key()
    now = utcnow()
    async with AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(router.session(region)) for region in router.regions
        ]
        for session in sessions:
            session.add(Application(
                id=app_id, name=name, redirect_uris=list(redirect_uris), created_at=now
            ))
            session.add(ApiKey(prefix=prefix, application_id=app_id, key_digest=digest,
                               created_at=now))
            await session.flush()
        for session in sessions:
            await session.commit()
    return app_id, key


async def replicate_application(router: RegionRouter, source: str, app_id: ApplicationId) -> None:
    """Copy an application and its keys from region ``source`` to every region lacking it."""
    async with router.reader(source) as session:
        app = await session.get(Application, app_id)
        keys = list((await session.execute(
            select(ApiKey).where(ApiKey.application_id == app_id)
        )).scalars())
    if app is None:
        raise InvalidApiKey(f"application {app_id} does not exist in region {source}")
    for region in router.regions:
        async with router.session(region) as target, target.begin():
            await target.merge(Application(
                id=app.id, name=app.name, redirect_uris=app.redirect_uris,
                created_at=app.created_at, disabled_at=app.disabled_at,
            ))
            for k in keys:
                await target.merge(ApiKey(
                    prefix=k.prefix, application_id=k.application_id, key_digest=k.key_digest,
                    created_at=k.created_at, revoked_at=k.revoked_at,
                ))


async def authenticate(session: AsyncSession, presented: str) -> ApplicationId:
    """The application a presented API key belongs to, checked in the session's region."""
    parts = presented.split("_", 2) if isinstance(presented, str) else []
    if len(parts) != 3 or parts[0] != KEY_KIND:
        raise InvalidApiKey("not an API key of this gateway")
    row = (await session.execute(
        select(ApiKey.key_digest, ApiKey.revoked_at, Application.id, Application.disabled_at)
        .join(Application, Application.id == ApiKey.application_id)
        .where(ApiKey.prefix == parts[1])
    )).one_or_none()
    # Compare digests in constant time; the prefix lookup itself reveals nothing secret.
    if row is None or not hmac.compare_digest(bytes(row.key_digest), secret_digest(presented)):
        raise InvalidApiKey("unknown API key")
    if row.revoked_at is not None or row.disabled_at is not None:
        raise InvalidApiKey("API key revoked or application disabled")
    return ApplicationId(row.id)
