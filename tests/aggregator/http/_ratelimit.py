"""Shared pieces of the rate limiter tests: a real Redis under a random key prefix."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aggregator.settings import RateLimitSettings

REDIS_URL = os.environ.get("AGGREGATOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_limits() -> AsyncIterator[RateLimitSettings]:
    """Rate limit settings on the real Redis, with a key prefix of this test's own.

    Skipped, with the reason, only when Redis does not answer (a failure under CI, see
    tests/conftest.py); every key under the prefix is deleted afterwards.
    """
    prefix = f"aggregator-test:{secrets.token_hex(8)}:"
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        pytest.skip(f"Redis does not answer at {REDIS_URL}: {type(exc).__name__}")
    try:
        yield RateLimitSettings(backend="redis", redis_url=REDIS_URL, redis_key_prefix=prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
