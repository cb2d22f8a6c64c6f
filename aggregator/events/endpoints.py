"""An application's event endpoint and signing secrets, written to every region.

Applications are replicated (:mod:`aggregator.applications`), and events are delivered
from the region they were written in, so every region's application row holds the URL
and the secrets. Each region seals its copy of a secret under its own key: AES-256-GCM
under HMAC-SHA256 of the application id by the region's pepper (purpose
``webhook_secret``), as :mod:`aggregator.erasure.escrow` does, with an AAD naming the
application and the slot, so a blob copied to another application or slot does not
open. The secret is shown once, when made; neither it nor the blob reaches a log.

Rotation keeps the previous secret for a grace period (a day by default) and signs
with both meanwhile, so receivers switch without dropping a message. A second rotation
within the period retires the oldest secret at once.

The URL check is a first line only: ``https``, or ``http`` to a loopback address, and
never a link-local, private or unspecified address literal (169.254.169.254 is the
cloud metadata service: SSRF). Names are not resolved here; a resolving guard at
delivery time is a later issue.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aggregator.custody import RegionCustody
from aggregator.events.standard_webhooks import new_secret
from aggregator.ids import ApplicationId
from aggregator.models import Application
from aggregator.models.base import utcnow
from aggregator.sealing import KeyedHasher
from aggregator.store.router import RegionRouter

_CONTEXT = b"aggregator/webhook-secret/v1"
_NONCE = 12
CURRENT, PREVIOUS = "current", "previous"
ROTATION_GRACE = timedelta(hours=24)
_BLOCKED_NAMES = ("metadata.google.internal", "metadata")


class UnsafeUrl(ValueError):
    """The URL may not receive events; the message says why (it never echoes the URL)."""


def check_url(url: str) -> str:
    """``url`` if events may be sent there, else :class:`UnsafeUrl`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("not a valid URL") from None
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in ("https", "http"):
        raise UnsafeUrl("the URL must use https")
    if not host or parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL needs a host and no user information")
    if parts.fragment or port == 0:
        raise UnsafeUrl("the URL may not carry a fragment or port 0")
    if host in _BLOCKED_NAMES or host.endswith((".internal", ".local")):
        raise UnsafeUrl("the URL names an internal host")
    address = _address(host)
    loopback = host == "localhost" or (address is not None and address.is_loopback)
    if address is not None and not loopback and not address.is_global:
        raise UnsafeUrl("the URL names a private, link-local or reserved address")
    if parts.scheme == "http" and not loopback:
        raise UnsafeUrl("plain http is allowed to loopback addresses only; use https")
    return url


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


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
) -> EndpointChange | None:
    """Set the URL and/or rotate the secret, in every region; None if the app is unknown.

    The first secret is made with the first URL. Every region is flushed before any
    commits (as :func:`aggregator.applications.create_application` does), so one
    region's failure writes nothing.
    """
    if url is not None:
        check_url(url)
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
            if url is not None:
                app.webhook_url = url
            if secret is not None:
                _install(hasher, app, secret, expires)
            await session.flush()
        for session in sessions.values():
            await session.commit()
    return EndpointChange(first.webhook_url, secret, expires)


def _install(hasher: KeyedHasher, app: Application, secret: str,
             expires: datetime | None) -> None:
    if app.webhook_secret_sealed is not None and expires is not None:
        old = open_secret(hasher, app.id, CURRENT, bytes(app.webhook_secret_sealed))
        app.webhook_previous_secret_sealed = seal_secret(hasher, app.id, PREVIOUS, old)
        app.webhook_previous_expires_at = expires
    app.webhook_secret_sealed = seal_secret(hasher, app.id, CURRENT, secret)
