"""Buckets in Redis (redis-py), for deployments that already run one.

One Lua script per take, run with ``EVALSHA`` (redis-py's ``Script`` falls back to
``EVAL`` once when the server has not cached it yet): Redis runs a script atomically, so
gateways sharing the server share every bucket exactly as the database store does.
The script reads the server's clock (``TIME``; allowed in scripts since Redis 5, which
replicates a script's effects rather than the script), applies the same arithmetic as
:func:`~aggregator.http.ratelimit.policy.take_tokens`, and sets a TTL of the time an
emptied bucket needs to fill: an idle bucket disappears by itself, nothing to purge.
Numbers cross the Lua boundary as strings, since Redis truncates Lua numbers in replies.

Keys are ``{prefix}{region}:{bucket}``; a bucket of a client address holds an HMAC of
it, never the address.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aggregator.http.ratelimit.policy import Level, full_after
from aggregator.http.ratelimit.stores import RateLimitStoreUnavailable
from aggregator.settings import RateLimit, RateLimitSettings

# KEYS[1]: the bucket. ARGV: capacity, refill per second, cost, TTL in ms, now ("" = TIME).
TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[5])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
local level = capacity
if tokens ~= nil and updated ~= nil then
  level = math.min(capacity, tokens + math.max(0, now - updated) * rate)
end
local granted = 0
if level >= cost then
  level = level - cost
  granted = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', level),
           'updated', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {granted, string.format('%.17g', level)}
"""


@contextlib.contextmanager
def map_redis_errors() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise RateLimitStoreUnavailable(f"the Redis rate limit store failed: "
                                        f"{type(exc).__name__}") from exc


class RedisBuckets:
    """Buckets in Redis; one connection pool per gateway process."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self._take = client.register_script(TAKE_SCRIPT)

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> RedisBuckets:
        if settings.redis_url is None:
            raise ValueError("rate_limits.redis.url is not set")
        password = settings.redis_password.reveal() if settings.redis_password else None
        client = aioredis.Redis.from_url(
            settings.redis_url, password=password, socket_timeout=1.0,
            socket_connect_timeout=1.0, health_check_interval=30,
        )
        return cls(client, key_prefix=settings.redis_key_prefix)

    def key(self, region: str, bucket: str) -> str:
        return f"{self.key_prefix}{region}:{bucket}"

    async def take(
        self, region: str, bucket: str, limit: RateLimit, *, cost: int = 1,
        now: float | None = None,
    ) -> Level:
        if not 0 < cost <= limit.capacity:
            raise ValueError("a request must cost between 1 token and the bucket's capacity")
        ttl_ms = max(1, math.ceil(full_after(limit) * 1000))
        args: list[str | int] = [limit.capacity, repr(limit.refill_per_second), cost, ttl_ms,
                "" if now is None else repr(now)]
        with map_redis_errors():
            granted, tokens = await self._take(keys=[self.key(region, bucket)], args=args)
        return Level(bool(int(granted)), float(tokens))

    async def close(self) -> None:
        with map_redis_errors():
            await self.client.aclose()
