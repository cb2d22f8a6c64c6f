"""Plaid's webhook verification keys, cached by ``kid``, fetched at a bounded rate.

A webhook names its key by ``kid``; the key comes from ``/webhook_verification_key/get``.
Anyone can send us a JWS with a made-up ``kid``, so a cache miss must not turn into a
call to Plaid per request: unknown kids draw from a token bucket (a burst of
``unknown_kid_burst`` fetches, then one per ``unknown_kid_interval`` seconds), kids
Plaid said it does not know are remembered for ``negative_ttl`` seconds, and fetches
run one at a time. A known key is re-fetched after ``key_ttl`` seconds so that an
``expired_at`` set later (key rotation) is noticed; if that refresh fails the cached
key stays in use.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from connectors.errors import ConnectorError
from connectors.plaid.jwk import public_key_from_jwk
from connectors.plaid.reasons import RejectReason, WebhookRejected

__all__ = ["KeyFetcher", "VerificationKey", "WebhookKeys"]

#: Fetches the JWK for a kid; ``None`` when Plaid has no such key. Raises
#: :class:`~connectors.errors.ConnectorError` when Plaid cannot be asked.
KeyFetcher = Callable[[str], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A usable key: its public key, and when it expired (Unix seconds) if it has."""

    kid: str
    public_key: ec.EllipticCurvePublicKey
    expired_at: float | None
    fetched_at: float


class WebhookKeys:
    """The kid → key cache of one Plaid environment (one region's credentials)."""

    def __init__(
        self, fetch: KeyFetcher, *, clock: Callable[[], float] = time.time,
        unknown_kid_burst: int = 3, unknown_kid_interval: float = 10.0,
        key_ttl: float = 3600.0, negative_ttl: float = 300.0, max_negative: int = 1024,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._burst = unknown_kid_burst
        self._interval = unknown_kid_interval
        self._key_ttl = key_ttl
        self._negative_ttl = negative_ttl
        self._max_negative = max_negative
        self._keys: dict[str, VerificationKey] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._tokens = float(unknown_kid_burst)
        self._refilled = clock()
        self._lock = asyncio.Lock()
        self.fetches = 0  # calls made to Plaid, for tests and metrics

    async def resolve(self, kid: str) -> VerificationKey:
        """The key for ``kid``, or :class:`WebhookRejected` saying why there is none."""
        key = self._keys.get(kid)
        if key is not None and self._clock() - key.fetched_at < self._key_ttl:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            now = self._clock()
            if key is not None:
                if now - key.fetched_at < self._key_ttl:
                    return key
                return await self._refresh(key)
            if self._unknown.get(kid, 0.0) > now:
                raise WebhookRejected(RejectReason.UNKNOWN_KID)
            if not self._take_token(now):
                raise WebhookRejected(RejectReason.KID_RATE_LIMITED)
            return await self._load(kid)

    def _take_token(self, now: float) -> bool:
        elapsed = max(0.0, now - self._refilled)
        self._tokens = min(float(self._burst), self._tokens + elapsed / self._interval)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    async def _load(self, kid: str) -> VerificationKey:
        self.fetches += 1
        try:
            jwk = await self._fetch(kid)
        except ConnectorError:
            raise WebhookRejected(RejectReason.KEY_UNAVAILABLE) from None
        if jwk is None or jwk.get("kid") != kid:
            self._remember_unknown(kid)
            raise WebhookRejected(RejectReason.UNKNOWN_KID)
        key = self._parse(kid, jwk)
        self._keys[kid] = key
        return key

    async def _refresh(self, cached: VerificationKey) -> VerificationKey:
        try:
            return await self._load(cached.kid)
        except WebhookRejected as exc:
            if exc.reason is RejectReason.KEY_UNAVAILABLE:
                return cached  # Plaid is down: the key we hold is still Plaid's key
            self._keys.pop(cached.kid, None)
            raise

    def _parse(self, kid: str, jwk: Mapping[str, Any]) -> VerificationKey:
        try:
            public_key = public_key_from_jwk(jwk)
        except ValueError:
            raise WebhookRejected(RejectReason.BAD_KEY) from None
        expired = jwk.get("expired_at")
        if expired is not None and (isinstance(expired, bool)
                                    or not isinstance(expired, int | float)):
            raise WebhookRejected(RejectReason.BAD_KEY)
        return VerificationKey(kid, public_key, None if expired is None else float(expired),
                               self._clock())

    def _remember_unknown(self, kid: str) -> None:
        self._unknown[kid] = self._clock() + self._negative_ttl
        self._unknown.move_to_end(kid)
        while len(self._unknown) > self._max_negative:
            self._unknown.popitem(last=False)
