"""The bucket arithmetic, the RateLimit fields, route classes, client addresses, settings."""

from __future__ import annotations

import math
from ipaddress import ip_network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.errors import ConfigError
from aggregator.http.ratelimit import Decision, Level, RouteClass, classify, take_tokens
from aggregator.http.ratelimit.clientip import client_address, subject_of
from aggregator.settings import DEFAULT_RATE_LIMITS, RateLimit, load_settings
from tests.aggregator.commands.test_serve import run as run_command
from tests.aggregator.commands.test_serve import workdir

__all__ = ["workdir"]  # the fixture, imported for pytest

limits = st.builds(RateLimit, st.integers(1, 1000),
                   st.floats(0.001, 1000, allow_nan=False, allow_infinity=False))
gaps = st.lists(st.floats(0, 120, allow_nan=False, allow_infinity=False), max_size=60)


@given(limits, gaps)
def test_a_bucket_never_grants_more_than_its_burst_plus_what_refilled(
    limit: RateLimit, waits: list[float]
) -> None:
    tokens: float | None = None
    updated: float | None = None
    now, granted = 1_000_000.0, 0
    for wait in waits:
        now += wait
        level = take_tokens(tokens, updated, now, limit)
        assert 0 <= level.tokens <= limit.capacity
        if tokens is not None:
            refilled = min(limit.capacity, tokens + wait * limit.refill_per_second)
            assert level.granted == (refilled >= 1)
        granted += level.granted
        tokens, updated = level.tokens, now
    elapsed = sum(waits[1:]) if waits else 0.0
    assert granted <= limit.capacity + elapsed * limit.refill_per_second + 1e-6


@given(limits, st.integers(0, 50))
def test_back_to_back_requests_get_exactly_the_burst(limit: RateLimit, extra: int) -> None:
    tokens: float | None = None
    outcomes = []
    for _ in range(limit.capacity + extra):
        level = take_tokens(tokens, 0.0 if tokens is not None else None, 0.0, limit)
        outcomes.append(level.granted)
        tokens = level.tokens
    assert outcomes == [True] * limit.capacity + [False] * extra


def test_a_clock_going_backwards_refills_nothing() -> None:
    limit = RateLimit(5, 1.0)
    level = take_tokens(0.0, 100.0, 90.0, limit)
    assert level == Level(False, 0.0)


def test_fields_follow_the_ratelimit_headers_draft() -> None:
    limit = RateLimit(300, 50.0)
    granted = Decision(RouteClass.READ, limit, Level(True, 12.4))
    assert granted.headers() == {
        "RateLimit-Policy": '"read";q=300;w=6',
        "RateLimit": f'"read";r=12;t={math.ceil((300 - 12.4) / 50)}',
    }
    refused = Decision(RouteClass.LINK, RateLimit(30, 0.5), Level(False, 0.25))
    assert refused.headers() == {
        "RateLimit-Policy": '"link";q=30;w=60',
        "RateLimit": '"link";r=0;t=2',  # (1 - 0.25) / 0.5 = 1.5 s, rounded up
        "Retry-After": "2",
    }


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/v1/users/usr_eu_x", RouteClass.READ),
    ("HEAD", "/v1/events", RouteClass.READ),
    ("POST", "/v1/link/sessions", RouteClass.WRITE),
    ("DELETE", "/v1/connections/con_eu_x", RouteClass.WRITE),
    ("GET", "/link/lnk_eu_x", RouteClass.LINK),
    ("POST", "/link/lnk_eu_x", RouteClass.LINK),
    ("GET", "/link/callback", RouteClass.LINK),
    ("GET", "/link/static/link.css", None),
    ("GET", "/link/banks/sandbox/logo", None),
    ("POST", "/webhooks/plaid/eu", None),
    ("GET", "/healthz", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
])
def test_route_classes(method: str, path: str, expected: RouteClass | None) -> None:
    assert classify(method, path) == expected


def _scope(peer: str, *forwarded: str) -> dict[str, object]:
    return {"type": "http", "client": (peer, 50000),
            "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]}


def test_forwarded_for_is_ignored_without_trusted_proxies() -> None:
    scope = _scope("198.51.100.7", "203.0.113.9")
    assert str(client_address(scope, ())) == "198.51.100.7"


def test_forwarded_for_is_read_from_the_right_past_trusted_proxies_only() -> None:
    proxies = (ip_network("10.0.0.0/8"),)
    # The client wrote "1.2.3.4" itself; the edge proxy appended the real peer.
    scope = _scope("10.0.0.2", "1.2.3.4, 203.0.113.9", "10.0.0.1")
    assert str(client_address(scope, proxies)) == "203.0.113.9"
    # A peer that is not a trusted proxy: its header is the client's own claim.
    assert str(client_address(_scope("198.51.100.7", "10.0.0.1"), proxies)) == "198.51.100.7"
    # Garbage from the nearest hop: charge the last hop we could read.
    assert str(client_address(_scope("10.0.0.2", "not-an-ip"), proxies)) == "10.0.0.2"
    assert str(client_address(_scope("10.0.0.2", "[2001:db8::1]:443"), proxies)) == "2001:db8::1"


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    first = client_address(_scope("2001:db8:1:2::1"), ())
    second = client_address(_scope("2001:db8:1:2:ffff::9"), ())
    assert first is not None
    assert second is not None
    assert subject_of(first) == subject_of(second) == "2001:db8:1:2::/64"
    mapped = client_address(_scope("::ffff:192.0.2.8"), ())
    assert mapped is not None
    assert subject_of(mapped) == "192.0.2.8"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aggregator.toml"
    path.write_text(text)
    return path


def test_rate_limit_settings_from_file_and_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, """
[rate_limits]
trusted_proxies = ["10.0.0.0/8", "2001:db8::/32"]
[rate_limits.classes.read]
capacity = 10
refill_per_second = 2.5
[rate_limits.applications.app_x.write]
capacity = 99
refill_per_second = 9
[rate_limits.redis]
password_env = "REDIS_PW"
""")
    settings = load_settings(path, environ={
        "AGGREGATOR_RATE_LIMITS_BACKEND": "redis",
        "AGGREGATOR_RATE_LIMITS_REDIS_URL": "redis://127.0.0.1:6379/3",
        "REDIS_PW": "pw-secret",
    }).rate_limits
    assert settings.backend == "redis"
    assert settings.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.redis_password is not None
    assert settings.redis_password.reveal() == "pw-secret"
    assert "pw-secret" not in repr(settings)
    assert settings.classes["read"] == RateLimit(10, 2.5)
    assert settings.classes["link"] == DEFAULT_RATE_LIMITS["link"]
    assert settings.applications == {"app_x": {"write": RateLimit(99, 9.0)}}
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "2001:db8::/32"]
    off = load_settings(None, environ={"AGGREGATOR_RATE_LIMITS_ENABLED": "false"})
    assert off.rate_limits.enabled is False


@pytest.mark.parametrize(("text", "env", "message"), [
    ("[rate_limits]\nbackend = 'dict'\n", {}, r"rate_limits\.backend: 'dict'"),
    ("[rate_limits.classes.admin]\ncapacity = 1\nrefill_per_second = 1\n", {},
     r"unknown route class rate_limits\.classes\.admin"),
    ("[rate_limits.classes.read]\ncapacity = 0\nrefill_per_second = 1\n", {},
     r"rate_limits\.classes\.read\.capacity must be a positive number"),
    ("[rate_limits.classes.read]\ncapacity = 2.5\nrefill_per_second = 1\n", {},
     "whole number"),
    ("[rate_limits]\ntrusted_proxies = ['10.0.0.300/8']\n", {}, "trusted_proxies"),
    ("[rate_limits]\nbackend = 'redis'\n", {}, r"rate_limits\.redis\.url is required"),
    ("[rate_limits]\nbackend = 'redis'\n[rate_limits.redis]\nurl = 'redis://:pw@h:6379'\n", {},
     "must not carry a password"),
    ("[rate_limits]\nbackend = 'memory'\n",
     {"AGGREGATOR_REGION_EU_DATABASE_URL": "postgresql+psycopg://db/eu"},
     "counts per process"),
    ("", {"AGGREGATOR_RATE_LIMITS_ENABLED": "maybe"}, "not true or false"),
])
def test_bad_rate_limit_settings_fail_at_start_up(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(_write(tmp_path, text), environ=env)
    assert "pw" not in str(caught.value).replace("password", "")


def test_memory_buckets_with_one_process_per_core_stop_start_up(workdir: Path) -> None:
    (workdir / "aggregator.toml").write_text("[rate_limits]\nbackend = 'memory'\n")
    with pytest.raises(ConfigError, match="--reuse-port runs several gateway processes"):
        run_command("serve", "--reuse-port")
