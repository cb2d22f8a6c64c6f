"""API-key authentication of ``/v1`` calls: ``Authorization: Bearer agk_…`` (RFC 6750 §2.1).

The key's digest is compared in constant time by :func:`aggregator.applications.authenticate`;
this module only extracts the credential and picks the region to check it in.
Applications are replicated to every region, so any region can answer; the route
passes the region its path id names. Every failure (no header, not Bearer, unknown,
revoked, disabled) is the same 401 problem, so a caller learns nothing about which keys
exist.

A key that checked out is trusted for a few seconds without a database read
(:mod:`aggregator.http.keycache`): revocation takes effect within that bound.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.requests import Request

from aggregator.applications import authenticate as check_key
from aggregator.http.keycache import KeyCache
from aggregator.http.problems import Unauthenticated
from aggregator.ids import ApplicationId

if TYPE_CHECKING:
    from aggregator.http.services import Services

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"Bearer +([A-Za-z0-9._~+/-]+=*) *", re.IGNORECASE)
_MAX_HEADER = 512
#: ``Services.extra`` key of the process's :class:`KeyCache` (built on first use).
KEY_CACHE = "api_key_cache"


def bearer_token(request: Request) -> str:
    values = request.headers.getlist("authorization")
    if len(values) != 1 or len(values[0]) > _MAX_HEADER:
        raise Unauthenticated()
    match = _BEARER.fullmatch(values[0])
    if match is None:
        raise Unauthenticated()
    return match.group(1)


async def authenticate(
    request: Request, services: Services, region: str | None
) -> ApplicationId:
    """The calling application, checked in ``region`` (default: the first configured)."""
    token = bearer_token(request)
    region = region or services.router.regions[0]
    cache = services.extra.get(KEY_CACHE)
    if not isinstance(cache, KeyCache):
        cache = services.extra[KEY_CACHE] = KeyCache()

    async def check() -> ApplicationId:
        async with services.router.reader(region) as session:
            return await check_key(session, token)

    return await cache.application(region, token, check)
