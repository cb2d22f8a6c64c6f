"""An application's event endpoint and signing secrets, written to every region.

Applications are replicated (:mod:`aggregator.applications`), and events are delivered
from the region they were written in, so every region's application row holds the URL
and the secrets. Each region seals its copy of a secret under its own key: AES-256-GCM
under HMAC-SHA256 of the application id by the region's pepper (purpose
``webhook_secret``), as :mod:`aggregator.erasure.escrow` does, with an AAD naming the
application and the slot, so a blob copied to another application or slot does not
open. The secret is shown once, when made; neither it nor the blob reaches a log. The
URL is sealed the same way (slot ``url``): a receiver's URL often carries a credential
of its own in the path or query, so it is logged by origin only (connectors.logging).

Rotation keeps the previous secret for a grace period (a day by default) and signs
with both meanwhile, so receivers switch without dropping a message. A second rotation
within the period retires the oldest secret at once.

The URL is held to the process's outbound policy (:class:`connectors.EgressPolicy`,
``[egress]`` in the settings) when it is registered: ``https`` only (``http`` to
loopback only where development opted in), no link-local (169.254.169.254 is the cloud
metadata service), private, loopback or reserved target in any spelling, and the name
resolved now with every answer checked: server-side request forgery (CWE-918) is
refused with a 422 before an event exists. Delivery checks again, on every connection
(:mod:`connectors.egress.transport`), since DNS answers change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from aggregator.custody import RegionCustody
from aggregator.events.standard_webhooks import new_secret
from aggregator.ids import ApplicationId
from aggregator.models import Application
from aggregator.models.base import utcnow
from aggregator.sealing import KeyedHasher
from aggregator.store.router import RegionRouter
from connectors import EgressPolicy, EgressRefused, Resolver, check_destination

_CONTEXT = b"aggregator/webhook-secret/v1"
_NONCE = 12
CURRENT, PREVIOUS, URL = "current", "previous", "url"
ROTATION_GRACE = timedelta(hours=24)
_STRICT = EgressPolicy()


class UnsafeUrl(ValueError):
    """The URL may not receive events; the message says why (it never echoes the URL)."""


def check_url(url: str, policy: EgressPolicy = _STRICT) -> str:
    """``url`` if `policy` lets events be sent there (judged without DNS), else
    :class:`UnsafeUrl`."""
    problem = policy.url_problem(url)
    if problem:
        raise UnsafeUrl(problem)
    return url


async def check_endpoint(
    url: str, policy: EgressPolicy = _STRICT, resolver: Resolver | None = None
) -> str:
    """:func:`check_url`, then every address the host resolves to now."""
    check_url(url, policy)
    try:
        await check_destination(policy, url, resolver)
    except EgressRefused as exc:
        raise UnsafeUrl(str(exc)) from None
    return url


def _aesgcm(hasher: KeyedHasher, app_id: str) -> AESGCM:
    return AESGCM(hasher.digest("webhook_secret", app_id))


def _aad(app_id: str, slot: str) -> bytes:
    return b"|".join((_CONTEXT, app_id.encode("ascii"), slot.encode("ascii")))


def seal_secret(hasher: KeyedHasher, app_id: str, slot: str, secret: str) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + _aesgcm(hasher, app_id).encrypt(nonce, secret.encode(), _aad(app_id, slot))


def open_secret(hasher: KeyedHasher, app_id: str, slot: str, blob: bytes) -> str:
    nonce, body = blob[:_NONCE], blob[_NONCE:]
    return _aesgcm(hasher, app_id).decrypt(nonce, body, _aad(app_id, slot)).decode()


def url_of(hasher: KeyedHasher, app: Application) -> str | None:
    """The application's event URL: sealed, or a clear one an earlier release wrote."""
    if app.webhook_url_sealed is not None:
        return open_secret(hasher, app.id, URL, bytes(app.webhook_url_sealed))
    return app.webhook_url


async def seal_clear_urls(router: RegionRouter, custody: RegionCustody) -> int:
    """Seal the event URLs earlier releases stored in clear in this region (resumable)."""
    async with router.session(custody.region) as session, session.begin():
        apps = (await session.execute(
            select(Application).where(Application.webhook_url.is_not(None))
        )).scalars().all()
        for app in apps:
            assert app.webhook_url is not None
            app.webhook_url_sealed = seal_secret(custody.hasher, app.id, URL, app.webhook_url)
            app.webhook_url = None
    return len(apps)


def secrets_in_use(hasher: KeyedHasher, app: Application, now: datetime) -> list[str]:
    """The secrets to sign with, newest first: the current, and the previous until it
    expires."""
    out = []
    if app.webhook_secret_sealed is not None:
        out.append(open_secret(hasher, app.id, CURRENT, bytes(app.webhook_secret_sealed)))
    expires = app.webhook_previous_expires_at
    if app.webhook_previous_secret_sealed is not None and expires is not None and now < expires:
        out.append(open_secret(
            hasher, app.id, PREVIOUS, bytes(app.webhook_previous_secret_sealed)
        ))
    return out


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """What changed: the URL, and the new secret when one was made (shown only now)."""

    url: str | None
    secret: str | None
    previous_expires_at: datetime | None


async def configure(
    router: RegionRouter, custody: Mapping[str, RegionCustody], app_id: ApplicationId, *,
    url: str | None = None, rotate: bool = False, grace: timedelta = ROTATION_GRACE,
    policy: EgressPolicy = _STRICT, resolver: Resolver | None = None,
) -> EndpointChange | None:
    """Set the URL and/or rotate the secret, in every region; None if the app is unknown.

    The first secret is made with the first URL. Every region is flushed before any
    commits (as :func:`aggregator.applications.create_application` does), so one
    region's failure writes nothing. The URL must pass :func:`check_endpoint` under
    `policy` (the settings' ``egress``), else :class:`UnsafeUrl`.
    """
    if url is not None:
        await check_endpoint(url, policy, resolver)
    now = utcnow()
    async with AsyncExitStack() as stack:
        sessions = {
            region: await stack.enter_async_context(router.session(region))
            for region in router.regions
        }
        apps = {r: await s.get(Application, app_id) for r, s in sessions.items()}
        if any(app is None for app in apps.values()):
            return None
        first = next(iter(apps.values()))
        assert first is not None
        secret = new_secret() if rotate or first.webhook_secret_sealed is None else None
        expires = now + grace if secret is not None and first.webhook_secret_sealed else None
        for region, session in sessions.items():
            app = apps[region]
            assert app is not None
            hasher = custody[region].hasher
            if url is not None:  # the URL may hold a credential: sealed like the secrets
                app.webhook_url_sealed = seal_secret(hasher, app.id, URL, url)
                app.webhook_url = None
            if secret is not None:
                _install(hasher, app, secret, expires)
            await session.flush()
        for session in sessions.values():
            await session.commit()
    return EndpointChange(url_of(custody[next(iter(sessions))].hasher, first), secret,
                          expires)


def _install(hasher: KeyedHasher, app: Application, secret: str,
             expires: datetime | None) -> None:
    if app.webhook_secret_sealed is not None and expires is not None:
        old = open_secret(hasher, app.id, CURRENT, bytes(app.webhook_secret_sealed))
        app.webhook_previous_secret_sealed = seal_secret(hasher, app.id, PREVIOUS, old)
        app.webhook_previous_expires_at = expires
    app.webhook_secret_sealed = seal_secret(hasher, app.id, CURRENT, secret)
