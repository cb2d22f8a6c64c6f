"""Rate limits of the gateway's HTTP API: token buckets per route class and subject.

- :mod:`~aggregator.http.ratelimit.policy`: route classes, the bucket arithmetic, the
  ``RateLimit-Policy``/``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers-11);
- :mod:`~aggregator.http.ratelimit.stores`: buckets in the region's database (default)
  or, for one development process, in memory;
- :mod:`~aggregator.http.ratelimit.redis_store`: buckets in Redis (Lua, ``EVALSHA``);
- :mod:`~aggregator.http.ratelimit.clientip`: the client address, trusting
  ``X-Forwarded-For`` only from configured proxies;
- :mod:`~aggregator.http.ratelimit.middleware`: the middleware and the ``/v1`` hook.

Configured by ``[rate_limits]`` (:class:`aggregator.settings.RateLimitSettings`).
"""

from aggregator.http.ratelimit.middleware import (
    STORE_KEY,
    RateLimited,
    RateLimitMiddleware,
    admit_application,
    open_store,
)
from aggregator.http.ratelimit.policy import Decision, Level, RouteClass, classify, take_tokens
from aggregator.http.ratelimit.stores import (
    BucketStore,
    DatabaseBuckets,
    MemoryBuckets,
    RateLimitStoreUnavailable,
)

__all__ = [
    "STORE_KEY",
    "BucketStore",
    "DatabaseBuckets",
    "Decision",
    "Level",
    "MemoryBuckets",
    "RateLimitMiddleware",
    "RateLimitStoreUnavailable",
    "RateLimited",
    "RouteClass",
    "admit_application",
    "classify",
    "open_store",
    "take_tokens",
]
