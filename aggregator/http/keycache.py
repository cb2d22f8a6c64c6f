"""A short-lived cache of authenticated API keys, so reads do not look the key up each time.

Decision (bench/read_api_bench.py): the uncached key lookup was 9 % of a
``GET /v1/connections/{id}/accounts``; every ``/v1`` request paid a database round trip
before its own query. A key that checked out is remembered for :data:`KEY_TTL` seconds,
under the SHA-256 of the presented key (never the key itself) and the region that
checked it.

The bound: revoking a key (``api_keys.revoked_at``) or disabling its application
(``applications.disabled_at``) takes effect in every gateway process within
:data:`KEY_TTL` seconds, because an entry is never served past its expiry and a fresh
check reads both columns. Failures are never cached: a key that is created or
re-enabled works at once, and a wrong key cannot crowd good ones out. The cache is
bounded (:data:`MAX_KEYS`, oldest entries dropped first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from hashlib import sha256

from aggregator.ids import ApplicationId

#: Seconds a checked key is trusted without a database read: the revocation bound.
KEY_TTL = 5.0
MAX_KEYS = 10_000


class KeyCache:
    """Applications by presented key, each trusted for ``ttl`` seconds after a check."""

    def __init__(self, ttl: float = KEY_TTL, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[tuple[str, bytes], tuple[ApplicationId, float]] = (
            OrderedDict())

    async def application(
        self, region: str, presented: str,
        check: Callable[[], Awaitable[ApplicationId]],
    ) -> ApplicationId:
        """The application of ``presented``, from the cache or else from ``check()``."""
        entry_key = (region, sha256(presented.encode("utf-8", "replace")).digest())
        now = self._clock()
        entry = self._entries.get(entry_key)
        if entry is not None and entry[1] > now:
            return entry[0]
        app_id = await check()  # raises for an unknown, revoked or disabled key
        self._entries[entry_key] = (app_id, self._clock() + self.ttl)
        self._entries.move_to_end(entry_key)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
        return app_id

    def clear(self) -> None:
        self._entries.clear()
