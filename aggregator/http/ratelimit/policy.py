"""Route classes, the token-bucket arithmetic, and the RateLimit header fields.

Route classes, and who a bucket belongs to:

- ``read``: ``GET`` of ``/v1``, per calling application (after authentication, so a
  caller who merely knows another application's public key prefix cannot drain it);
- ``write``: any other method of ``/v1``, per application;
- ``link``: the hosted Link page (``/link/{token}``) and the OAuth callback
  (``/link/callback``), per client address: nobody authenticates there, and a browser
  opening one session needs only a handful of requests. The console's password form
  (``POST /console/sign-in``) is charged here too: each attempt costs an argon2id hash,
  and guessing must stay slow;
- ``unauthenticated``: ``/v1`` answers of 401, per client address
  (:mod:`~aggregator.http.ratelimit.failures`).

Not limited: health, readiness, metrics and the API description (probes and scrapers
must see an overloaded gateway), static assets of the Link page, and Plaid's webhook
receiver ``/webhooks/plaid/{region}``. Plaid authenticates every delivery with a signed
JWT checked before anything is stored, it sends from a few shared addresses (a per-address
bucket would throttle all of Plaid's traffic together), and a 429 would only make Plaid
retry the same events later; forged floods cost one signature check each and are
counted by ``aggregator_plaid_webhooks{outcome=…}``.

The bucket (a "token bucket" / GCRA-style refill): ``capacity`` tokens, refilled
continuously at ``refill`` per second; a request takes one token or is refused. With
``level = min(capacity, tokens + max(0, now - updated) * refill)``, a request is granted
when ``level >= cost`` and leaves ``level - cost``; a refusal leaves ``level``. Every
store computes exactly :func:`take_tokens`, atomically.

Header fields follow draft-ietf-httpapi-ratelimit-headers-11 (23 May 2026), §3 and §4:
``RateLimit-Policy: "read";q=300;w=6`` (``q``: the burst, ``w``: seconds to refill it
from empty) and ``RateLimit: "read";r=12;t=5`` (``r``: whole tokens left; ``t``: seconds
until the bucket is full again). On a 429, ``r=0`` and ``t`` equals ``Retry-After`` (the
seconds until one token is back): §6 asks that Retry-After not point before the end of
the effective window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from aggregator.settings import RateLimit


class RouteClass(StrEnum):
    """What a request costs against; the values name the ``[rate_limits.classes]`` keys."""

    READ = "read"  # data API reads, per application
    WRITE = "write"  # data API writes, per application
    LINK = "link"  # hosted Link page and OAuth callback, per client address
    UNAUTHENTICATED = "unauthenticated"  # failed API-key checks, per client address


_STATIC_LINK = ("/link/static/", "/link/banks/")


def classify(method: str, path: str) -> RouteClass | None:
    """The class of a request, from its method and path alone (before routing)."""
    if path.startswith("/v1/"):
        return RouteClass.READ if method in ("GET", "HEAD") else RouteClass.WRITE
    if path.startswith("/link/") and not path.startswith(_STATIC_LINK):
        return RouteClass.LINK
    if path == "/console/sign-in" and method == "POST":
        return RouteClass.LINK
    return None


@dataclass(frozen=True, slots=True)
class Level:
    """A bucket right after a request: was it granted, and what is left."""

    granted: bool
    tokens: float


def take_tokens(
    tokens: float | None, updated: float | None, now: float, limit: RateLimit, cost: int = 1
) -> Level:
    """The reference arithmetic every store implements (``None``: a bucket never used)."""
    if tokens is None or updated is None:
        level = float(limit.capacity)
    else:
        refilled = tokens + max(0.0, now - updated) * limit.refill_per_second
        level = min(float(limit.capacity), refilled)
    if level >= cost:
        return Level(True, level - cost)
    return Level(False, level)


def full_after(limit: RateLimit) -> float:
    """Seconds an emptied bucket takes to fill: how long a row stays worth keeping."""
    return limit.capacity / limit.refill_per_second


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request under one class's bucket, and how to say it in headers."""

    route_class: RouteClass
    limit: RateLimit
    level: Level

    @property
    def granted(self) -> bool:
        return self.level.granted

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.level.tokens + 1e-9))

    @property
    def retry_after(self) -> int:
        """Whole seconds until one token is back (at least 1): the 429's Retry-After."""
        missing = max(0.0, 1.0 - self.level.tokens)
        return max(1, math.ceil(missing / self.limit.refill_per_second - 1e-9))

    @property
    def reset(self) -> int:
        """Whole seconds until the bucket is full again."""
        missing = max(0.0, self.limit.capacity - self.level.tokens)
        return max(0, math.ceil(missing / self.limit.refill_per_second - 1e-9))

    def headers(self) -> dict[str, str]:
        """``RateLimit-Policy`` and ``RateLimit`` (draft-11 §3, §4); Retry-After on refusal."""
        name = self.route_class.value
        window = max(1, math.ceil(full_after(self.limit)))
        out = {"RateLimit-Policy": f'"{name}";q={self.limit.capacity};w={window}'}
        if self.granted:
            out["RateLimit"] = f'"{name}";r={self.remaining};t={self.reset}'
        else:
            out["RateLimit"] = f'"{name}";r=0;t={self.retry_after}'
            out["Retry-After"] = str(self.retry_after)
        return out
