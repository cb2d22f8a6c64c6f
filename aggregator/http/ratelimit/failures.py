"""Failed authentication per client address: a flood of bad API keys is refused early.

Every ``/v1`` answer of 401 takes a token from the address's ``unauthenticated`` bucket in
the shared store (the first configured region's, a fixed home, since a request that
failed to authenticate names no trustworthy region). When that bucket refuses, this
process remembers the address as refused until a token is back, and answers its next
``/v1`` requests with a 429 before any database lookup: a key-guessing or
database-exhaustion flood then costs the gateway a dictionary lookup per request.
Good callers pay nothing: only failures touch the store.

The memory here is a cache of a decision the shared store made, bounded in size, never
a budget of its own: every process counts failures in the same bucket.
"""

from __future__ import annotations

import math
import time

MAX_REMEMBERED = 10_000


class RefusedAddresses:
    """Addresses whose ``unauthenticated`` bucket is empty, until when (monotonic clock)."""

    def __init__(self, max_size: int = MAX_REMEMBERED) -> None:
        self.max_size = max_size
        self._until: dict[str, float] = {}

    def wait(self, subject: str) -> int | None:
        """Whole seconds until ``subject`` may try again, or ``None`` if it may now."""
        until = self._until.get(subject)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._until[subject]
            return None
        return max(1, math.ceil(left))

    def refuse(self, subject: str, seconds: float) -> None:
        now = time.monotonic()
        if len(self._until) >= self.max_size:
            for key in [k for k, until in self._until.items() if until <= now]:
                del self._until[key]
            if len(self._until) >= self.max_size:  # still full: forget the oldest entry
                del self._until[next(iter(self._until))]
        self._until[subject] = now + seconds
