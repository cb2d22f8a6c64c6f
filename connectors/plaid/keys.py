"""Plaid's webhook verification keys, cached by ``kid``: bounded fetching, bounded trust.

A webhook names its key by ``kid``; the key comes from ``/webhook_verification_key/get``
(Plaid API docs, "Webhook verification"). Three bounds hold here, each documented in the
README ("Plaid webhooks: keys"):

**Trust of a retired key.** A known key is re-checked with Plaid once it was last
confirmed ``recheck_after`` seconds ago (default 300). A key Plaid has expired therefore
verifies for at most ``recheck_after`` seconds after Plaid expired it (exactly until
``expired_at`` when Plaid announced it ahead). If the re-check cannot reach Plaid the
key is *not* used on trust: the webhook is answered 503 (``key_unavailable``) and
Plaid retries it.

**Load on Plaid.** Anyone can send a JWS with a made-up ``kid``. Fetches for kids we do
not hold draw from one token bucket (a burst of ``unknown_kid_burst``, then one per
``unknown_kid_interval`` seconds) and run one at a time; a kid Plaid does not know is
remembered for ``negative_ttl`` seconds (negative caching per kid, at most
``max_negative`` of them), so it costs one fetch, however often it is sent.

**Genuine keys are not starved.** A token is not spent on whichever unknown kid happens
to arrive when one is free, but on the *most wanted* one: every request for an unknown
kid counts a sighting, and each fetch goes to the kid seen most often (ties: the most
recently seen). Plaid sends every webhook after a key rotation, and every retry of
one, with the new kid, so the genuine kid gathers sightings while each forged kid is
fetched once and then negatively cached; a forger must out-send Plaid *per fetch* to
hold it back. A request whose kid could not be fetched yet gets
:data:`~connectors.plaid.reasons.RejectReason.KID_RATE_LIMITED` with ``retry_after``
(the gateway answers 503 + ``Retry-After``: Plaid retries, where a 400 would read as a
permanent refusal). Once the genuine kid is the most wanted it is fetched within one
``unknown_kid_interval``.
"""

from __future__ import annotations

import asyncio
import math
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
#: Default bound on how long a key Plaid has expired can still verify, in seconds.
RECHECK_AFTER = 300.0


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A usable key: its public key, when it expired (Unix seconds) if it has, and when
    Plaid last confirmed it (``fetched_at``)."""

    kid: str
    public_key: ec.EllipticCurvePublicKey
    expired_at: float | None
    fetched_at: float


class WebhookKeys:
    """The kid → key cache of one Plaid environment (one region's credentials)."""

    def __init__(
        self, fetch: KeyFetcher, *, clock: Callable[[], float] = time.time,
        unknown_kid_burst: int = 3, unknown_kid_interval: float = 10.0,
        recheck_after: float = RECHECK_AFTER, negative_ttl: float = 300.0,
        max_negative: int = 1024, max_wanted: int = 1024,
    ) -> None:
        if recheck_after <= 0 or unknown_kid_interval <= 0 or unknown_kid_burst < 1:
            raise ValueError("key cache bounds must be positive")
        self._fetch = fetch
        self._clock = clock
        self._burst = unknown_kid_burst
        self._interval = unknown_kid_interval
        self.recheck_after = recheck_after
        self._negative_ttl = negative_ttl
        self._max_negative = max_negative
        self._max_wanted = max_wanted
        self._keys: dict[str, VerificationKey] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()
        #: kid → (sightings, last seen) of unknown kids waiting for a fetch token.
        self._wanted: dict[str, tuple[int, float]] = {}
        self._tokens = float(unknown_kid_burst)
        self._refilled = clock()
        self._lock = asyncio.Lock()
        self.fetches = 0  # calls made to Plaid, for tests and metrics

    async def resolve(self, kid: str) -> VerificationKey:
        """The key for ``kid``, or :class:`WebhookRejected` saying why there is none."""
        key = self._keys.get(kid)
        if key is not None and self._fresh(key):
            return key
        async with self._lock:  # one fetch at a time; waiters then find the result
            key = self._keys.get(kid)
            if key is not None:
                return key if self._fresh(key) else await self._recheck(key)
            now = self._clock()
            if self._unknown.get(kid, 0.0) > now:
                raise WebhookRejected(RejectReason.UNKNOWN_KID)
            self._sighted(kid, now)
            return await self._fetch_wanted(kid, now)

    def _fresh(self, key: VerificationKey) -> bool:
        return self._clock() - key.fetched_at < self.recheck_after

    async def _recheck(self, cached: VerificationKey) -> VerificationKey:
        # Known kids are Plaid's own (bounded by Plaid's key count): no token is spent.
        try:
            return await self._load(cached.kid)
        except WebhookRejected as exc:
            if exc.reason is not RejectReason.KEY_UNAVAILABLE:
                self._keys.pop(cached.kid, None)  # Plaid no longer knows it, or it broke
            raise

    def _sighted(self, kid: str, now: float) -> None:
        count = self._wanted.get(kid, (0, now))[0]
        self._wanted[kid] = (count + 1, now)
        if len(self._wanted) > self._max_wanted:  # forget the least wanted, oldest first
            del self._wanted[min(self._wanted, key=self._wanted.__getitem__)]

    async def _fetch_wanted(self, kid: str, now: float) -> VerificationKey:
        """Spend free tokens on the most wanted kids until ``kid`` is settled or none left."""
        while kid in self._wanted and self._take_token(now):
            best = max(self._wanted, key=self._wanted.__getitem__)
            del self._wanted[best]
            try:
                key = await self._load(best)
            except WebhookRejected as exc:
                if exc.reason is RejectReason.KEY_UNAVAILABLE:
                    self._wanted.setdefault(best, (1, now))  # not settled: still wanted
                if best == kid:
                    raise
                if exc.reason is RejectReason.KEY_UNAVAILABLE:
                    break
                continue
            if best == kid:
                return key
        known = self._keys.get(kid)
        if known is not None:
            return known
        if self._unknown.get(kid, 0.0) > now:
            raise WebhookRejected(RejectReason.UNKNOWN_KID)
        raise WebhookRejected(RejectReason.KID_RATE_LIMITED, retry_after=self._next_token(now))

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._refilled)
        self._tokens = min(float(self._burst), self._tokens + elapsed / self._interval)
        self._refilled = now

    def _take_token(self, now: float) -> bool:
        self._refill(now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _next_token(self, now: float) -> float:
        """Whole seconds until the next token (Retry-After), at least one."""
        self._refill(now)
        return float(max(1, math.ceil((1.0 - self._tokens) * self._interval)))

    async def _load(self, kid: str) -> VerificationKey:
        self.fetches += 1
        try:
            jwk = await self._fetch(kid)
        except ConnectorError:
            raise WebhookRejected(RejectReason.KEY_UNAVAILABLE,
                                  retry_after=self._interval) from None
        if jwk is None or jwk.get("kid") != kid:
            self._remember_unknown(kid)
            raise WebhookRejected(RejectReason.UNKNOWN_KID)
        key = self._parse(kid, jwk)
        self._keys[kid] = key
        return key

    def _parse(self, kid: str, jwk: Mapping[str, Any]) -> VerificationKey:
        try:
            public_key = public_key_from_jwk(jwk)
        except ValueError:
            raise WebhookRejected(RejectReason.BAD_KEY) from None
        expired = jwk.get("expired_at")
        if expired is not None and (isinstance(expired, bool)
                                    or not isinstance(expired, int | float)
                                    or not math.isfinite(expired)):
            raise WebhookRejected(RejectReason.BAD_KEY)
        return VerificationKey(kid, public_key, None if expired is None else float(expired),
                               self._clock())

    def _remember_unknown(self, kid: str) -> None:
        self._unknown[kid] = self._clock() + self._negative_ttl
        self._unknown.move_to_end(kid)
        while len(self._unknown) > self._max_negative:
            self._unknown.popitem(last=False)
