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

The lifecycle (list, show, update, rotate a key, revoke a key, disable) lives here, not in
the CLI, so every front end (``aggregator apps``, an operator console) changes the same
rows the same way, and each change appends an audit event in every region
(docs/operations.md, "Applications and API keys"). A key rotation keeps the old key valid
for an overlap: its ``revoked_at`` is set in the future, and :func:`authenticate` refuses a
key only once that moment has passed, so callers can roll the new key out without downtime.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit, branding, registrations
from aggregator.errors import GatewayError, InvalidApiKey
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
    router: RegionRouter, name: str, redirect_uris: Sequence[str], *, actor: str | None = None
) -> tuple[ApplicationId, str]:
    """Register an application in every region; returns its id and its first API key.

    The key is shown once: only its digest is kept. With ``actor`` (e.g. ``"operator"``)
    the creation is also recorded in every region's audit trail.
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
            if actor is not None:
                await audit.record(session, actor=actor, action="application.created",
                                   target_id=app_id, at=now)
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
    # A future revoked_at is a rotation's overlap: the key works until then.
    if (row.revoked_at is not None and row.revoked_at <= utcnow()) or row.disabled_at is not None:
        raise InvalidApiKey("API key revoked or application disabled")
    return ApplicationId(row.id)


# -- lifecycle ------------------------------------------------------------------------

#: How long a rotated-out key keeps working unless the caller says otherwise.
DEFAULT_KEY_OVERLAP = timedelta(hours=24)


class UnknownApplication(GatewayError):
    """Raised when an application id (or a key prefix) names nothing in this gateway."""

    code = "unknown_application"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One API key as an operator sees it: the public prefix and its dates, never the key."""

    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        """``active``, ``expiring`` (rotated out, inside its overlap) or ``revoked``."""
        if self.revoked_at is None:
            return "active"
        return "expiring" if self.revoked_at > now else "revoked"


@dataclass(frozen=True, slots=True)
class ApplicationInfo:
    """An application and its keys, read from one region (all regions hold the same)."""

    id: ApplicationId
    name: str
    redirect_uris: tuple[str, ...]
    created_at: datetime
    disabled_at: datetime | None
    keys: tuple[KeyInfo, ...]
    #: The Link page's branding (aggregator/branding.py); None: not set.
    brand_name: str | None = None
    brand_accent: str | None = None
    brand_logo: bool = False

    @property
    def state(self) -> str:
        return "disabled" if self.disabled_at is not None else "active"


async def list_applications(router: RegionRouter) -> list[ApplicationInfo]:
    """Every application, oldest first, as the first configured region holds it."""
    region = router.regions[0]
    async with router.reader(region) as session:
        apps = (await session.execute(
            select(Application).order_by(Application.created_at, Application.id)
        )).scalars().all()
        keys = (await session.execute(select(ApiKey).order_by(ApiKey.created_at))).scalars().all()
    by_app: dict[str, list[KeyInfo]] = {}
    for k in keys:
        by_app.setdefault(k.application_id, []).append(
            KeyInfo(k.prefix, k.created_at, k.revoked_at))
    return [
        ApplicationInfo(ApplicationId(a.id), a.name, tuple(a.redirect_uris), a.created_at,
                        a.disabled_at, tuple(by_app.get(a.id, ())), a.brand_name,
                        a.brand_accent, a.brand_logo is not None)
        for a in apps
    ]


async def show_application(router: RegionRouter, app_id: str) -> ApplicationInfo:
    """One application and its keys; :class:`UnknownApplication` if there is none."""
    for info in await list_applications(router):
        if info.id == app_id:
            return info
    raise UnknownApplication(f"no application {app_id!r}; `aggregator apps list` shows them")


Change = Callable[[AsyncSession, datetime], Awaitable[None]]


async def _everywhere(router: RegionRouter, app_id: str, change: Change, *,
                      actor: str, action: str) -> None:
    """Apply ``change`` and its audit event in every region; commit only if all flushed."""
    await show_application(router, app_id)  # a typo is named before anything is written
    now = utcnow()
    async with AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(router.session(region)) for region in router.regions
        ]
        for region, session in zip(router.regions, sessions, strict=True):
            if await session.get(Application, app_id) is None:
                raise UnknownApplication(
                    f"application {app_id} is missing in region {region}; "
                    "re-run replicate_application first")
            await change(session, now)
            await session.flush()
            await audit.record(session, actor=actor, action=action, target_id=app_id, at=now)
        for session in sessions:
            await session.commit()


async def update_application(
    router: RegionRouter, app_id: str, *, name: str | None = None,
    redirect_uris: Sequence[str] | None = None, actor: str = "operator",
    brand_name: str | None = None, brand_logo: str | None = None,
    brand_accent: str | None = None,
) -> ApplicationInfo:
    """Rename an application, replace its redirect URIs (validated by the caller) or
    change its Link page branding (validated here; ``""`` clears a brand value).

    Redirect URIs are an exact-match allow-list (RFC 9700 §4.1.3), so the new list takes
    effect for the next link session; sessions already started keep the URI they checked.
    A brand value is refused with :class:`BrandInvalid` naming the option (an accent
    colour below WCAG AA contrast, a logo that is not a small raster image).
    """
    if redirect_uris is not None and not redirect_uris:
        raise GatewayError("an application needs at least one redirect URI")
    brand: dict[str, str | None] = {}
    for column, value, check in (("brand_name", brand_name, branding.check_name),
                                 ("brand_logo", brand_logo, branding.check_logo),
                                 ("brand_accent", brand_accent, branding.check_accent)):
        if value is not None:
            brand[column] = check(value) if value else None

    async def change(session: AsyncSession, now: datetime) -> None:
        app = await session.get(Application, app_id)
        assert app is not None  # checked by _everywhere
        if name is not None:
            app.name = name
        if redirect_uris is not None:
            app.redirect_uris = list(redirect_uris)
        for column, kept in brand.items():
            setattr(app, column, kept)
        if name is not None or "brand_name" in brand:
            # The name banks show may have changed (aggregator/registrations.py).
            await registrations.mark_stale(session, app_id)

    await _everywhere(router, app_id, change, actor=actor, action="application.updated")
    return await show_application(router, app_id)


async def rotate_key(
    router: RegionRouter, app_id: str, *, overlap: timedelta = DEFAULT_KEY_OVERLAP,
    actor: str = "operator",
) -> tuple[str, datetime]:
    """Issue a new key; every key live now stops working ``overlap`` from now.

    Returns the new key (shown once) and the moment the old ones stop. An ``overlap`` of
    zero revokes them at once (a leaked key).
    """
    if overlap < timedelta(0):
        raise GatewayError("the overlap of a key rotation cannot be negative")
    key, prefix, digest = new_api_key()
    until: list[datetime] = []

    async def change(session: AsyncSession, now: datetime) -> None:
        app = await session.get(Application, app_id)
        assert app is not None
        if app.disabled_at is not None:
            raise GatewayError(f"application {app_id} is disabled; its keys cannot be rotated")
        ends = now + overlap
        until[:] = [ends]
        live = (await session.execute(select(ApiKey).where(
            ApiKey.application_id == app_id,
        ))).scalars().all()
        for old in live:
            if old.revoked_at is None or old.revoked_at > ends:
                old.revoked_at = ends
        session.add(ApiKey(prefix=prefix, application_id=app_id, key_digest=digest,
                           created_at=now))

    await _everywhere(router, app_id, change, actor=actor, action="api_key.rotated")
    return key, until[0]


async def revoke_key(router: RegionRouter, prefix: str, *, actor: str = "operator") -> str:
    """Revoke the key with this public prefix now (``agk_{prefix}_…``); returns its app id."""
    async with router.reader(router.regions[0]) as session:
        row = await session.get(ApiKey, prefix)
        app_id = row.application_id if row is not None else None
    if app_id is None:
        raise UnknownApplication(
            f"no API key with prefix {prefix!r}; `aggregator apps show APP_ID` lists them")

    async def change(session: AsyncSession, now: datetime) -> None:
        key = await session.get(ApiKey, prefix)
        if key is not None and (key.revoked_at is None or key.revoked_at > now):
            key.revoked_at = now

    await _everywhere(router, app_id, change, actor=actor, action="api_key.revoked")
    return app_id


async def disable_application(router: RegionRouter, app_id: str, *,
                              actor: str = "operator") -> None:
    """Refuse every key of the application from now on (its data stays; erasure is apart).

    Its own clients at banks (dynamic registration) are marked for deletion; the worker
    deletes them at the banks (aggregator/registrations.py).
    """

    async def change(session: AsyncSession, now: datetime) -> None:
        app = await session.get(Application, app_id)
        assert app is not None
        if app.disabled_at is None:
            app.disabled_at = now
        await registrations.mark_for_deletion(session, app_id)

    await _everywhere(router, app_id, change, actor=actor, action="application.disabled")
