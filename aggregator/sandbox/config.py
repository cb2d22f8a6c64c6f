"""Settings of the sandbox bank: registered clients, lifetimes and fault switches.

Everything here is plain data so that tests, benchmarks and the CLI can build a bank in
one expression; validation happens at construction so a bad setting fails at start-up,
not at the first request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aggregator.errors import ConfigError

#: Test users of the sandbox login page, ``username -> password``. Public, sandbox-only
#: values: they exist so tests and people can sign in; they protect nothing.
TEST_USERS: Mapping[str, str] = {
    "alice": "alice-pass",
    "bob": "bob-pass",
}

#: The client every default sandbox knows. Sandbox-only values, published on purpose.
DEV_CLIENT_ID = "sandbox-dev-client"
DEV_CLIENT_SECRET = "sandbox-dev-secret"  # noqa: S105 - documented sandbox-only value
DEV_REDIRECT_URIS: tuple[str, ...] = (
    "http://127.0.0.1/callback",
    "http://localhost/callback",
    # The gateway's own OAuth callback, so `sandbox-bank` + `serve` link out of the box.
    "http://127.0.0.1/link/callback",
    "http://localhost/link/callback",
)

CLIENT_AUTH_METHODS: tuple[str, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
)
SCOPES: tuple[str, ...] = ("openid", "offline_access", "accounts", "transactions")
#: Per-account resources of the account API that fault switches can take away.
RESOURCES: tuple[str, ...] = ("balances", "transactions")


@dataclass(frozen=True)
class SandboxClient:
    """A client registered at the sandbox bank.

    ``jwks`` holds the public key(s) for ``private_key_jwt``: a JWK set
    (``{"keys": [...]}``), a single public JWK, or a PEM-encoded public key. Loopback
    redirect URIs (``http://127.0.0.1/...``, ``http://localhost/...``) match any port, as
    RFC 8252 §7.3 asks of native-app redirects; every other URI must match exactly. A
    client may list ``private_key_jwt`` without keys; its assertions then fail as
    ``invalid_client``, which is what a bank does before the keys are uploaded.

    Example::

        SandboxClient(client_id="c1", client_secret="s1",
                      redirect_uris=["http://127.0.0.1/cb"])
    """

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    redirect_uris: Sequence[str] = ()
    auth_methods: Sequence[str] = ("client_secret_basic", "client_secret_post")
    jwks: Mapping[str, Any] | str | None = None
    scopes: Sequence[str] = SCOPES
    #: What the sign-in and consent pages call the client (RFC 7591 §2 ``client_name``);
    #: None: its id. Set by dynamic registration (aggregator/sandbox/rfc7591.py).
    client_name: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.auth_methods) - set(CLIENT_AUTH_METHODS)
        if not self.client_id:
            raise ConfigError("sandbox client: client_id is empty")
        if unknown or not self.auth_methods:
            raise ConfigError(f"sandbox client {self.client_id}: bad auth_methods {unknown}")
        uses_secret = {"client_secret_basic", "client_secret_post"} & set(self.auth_methods)
        if uses_secret and not self.client_secret:
            raise ConfigError(f"sandbox client {self.client_id}: secret methods need a secret")
        if not self.redirect_uris:
            raise ConfigError(f"sandbox client {self.client_id}: no redirect_uris")
        if not set(self.scopes) <= set(SCOPES):
            raise ConfigError(f"sandbox client {self.client_id}: unsupported scopes")


def dev_client() -> SandboxClient:
    """The documented development client; secret auth only, loopback redirects."""
    return SandboxClient(
        client_id=DEV_CLIENT_ID,
        client_secret=DEV_CLIENT_SECRET,
        redirect_uris=DEV_REDIRECT_URIS,
    )


@dataclass(frozen=True)
class Faults:
    """Fault switches, applied to the token endpoint and the account API.

    ``latency`` delays each answer (seconds); ``error_rate`` is the share of requests
    answered with 503, drawn from an RNG seeded with ``seed`` so a run is repeatable;
    ``rate_limit_retry_after`` answers every request with 429 and that ``Retry-After``;
    ``force_invalid_grant`` makes every token request fail with ``invalid_grant``;
    ``deny_consent`` makes the authorization endpoint deny every request at once
    (``error=access_denied``) without showing the login page.

    Per-account resources of the account API (``balances``, ``transactions``):
    ``missing_resources`` are answered 404 (a bank without them), ``forbidden_resources``
    403 (a consent without the permission). ``fail_next`` answers the next that many
    requests (token endpoint and account API alike) with 503, then behaves again: a
    transient outage.
    """

    latency: float = 0.0
    error_rate: float = 0.0
    rate_limit_retry_after: int | None = None
    force_invalid_grant: bool = False
    deny_consent: bool = False
    seed: int = 0
    missing_resources: tuple[str, ...] = ()
    forbidden_resources: tuple[str, ...] = ()
    fail_next: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency) and 0.0 <= self.latency <= 60.0):
            raise ConfigError("faults: latency must be between 0 and 60 seconds")
        if not (0.0 <= self.error_rate <= 1.0):
            raise ConfigError("faults: error_rate must be between 0 and 1")
        if self.rate_limit_retry_after is not None and self.rate_limit_retry_after < 0:
            raise ConfigError("faults: rate_limit_retry_after must be >= 0")
        for name in ("missing_resources", "forbidden_resources"):
            if not set(getattr(self, name)) <= set(RESOURCES):
                raise ConfigError(f"faults: {name} may name only {', '.join(RESOURCES)}")
        if self.fail_next < 0:
            raise ConfigError("faults: fail_next must be >= 0")

    @classmethod
    def from_json(cls, data: object) -> Faults:
        """Build from an admin request body, rejecting unknown or mistyped fields."""
        if not isinstance(data, dict):
            raise ConfigError("faults: body must be a JSON object")
        types: dict[str, tuple[type, ...]] = {
            "latency": (int, float),
            "error_rate": (int, float),
            "rate_limit_retry_after": (int, type(None)),
            "force_invalid_grant": (bool,),
            "deny_consent": (bool,),
            "seed": (int,),
            "missing_resources": (list,),
            "forbidden_resources": (list,),
            "fail_next": (int,),
        }
        for key, value in data.items():
            if key not in types:
                raise ConfigError(f"faults: unknown field {key!r}")
            bad_bool = isinstance(value, bool) and bool not in types[key]
            if bad_bool or not isinstance(value, types[key]):
                raise ConfigError(f"faults: field {key!r} has the wrong type")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"faults: field {key!r} must list strings")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "error_rate": self.error_rate,
            "rate_limit_retry_after": self.rate_limit_retry_after,
            "force_invalid_grant": self.force_invalid_grant,
            "deny_consent": self.deny_consent,
            "seed": self.seed,
            "missing_resources": list(self.missing_resources),
            "forbidden_resources": list(self.forbidden_resources),
            "fail_next": self.fail_next,
        }


@dataclass(frozen=True)
class SandboxConfig:
    """How a sandbox bank behaves; every lifetime is in seconds.

    ``issuer`` is normally left ``None``: the bank then uses the base URL it is served
    at (``http://127.0.0.1:PORT``), or the request's base URL when its ASGI app is driven
    directly. ``today`` pins the ledger's current day (default: today, UTC). Each refresh
    token lives ``refresh_token_ttl`` from its own issue, so rotation extends the grant.
    """

    clients: Sequence[SandboxClient] = field(default_factory=lambda: (dev_client(),))
    access_token_ttl: int = 300
    refresh_token_ttl: int = 90 * 24 * 3600
    code_ttl: int = 60
    par_ttl: int = 60
    interaction_ttl: int = 600
    require_par: bool = False
    page_size: int = 25
    issuer: str | None = None
    today: date | None = None
    client_assertion_max_lifetime: int = 300

    def __post_init__(self) -> None:
        ids = [client.client_id for client in self.clients]
        if len(ids) != len(set(ids)):
            raise ConfigError("sandbox: duplicate client_id")
        for name in ("access_token_ttl", "refresh_token_ttl", "code_ttl", "par_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"sandbox: {name} must be positive")
        if self.page_size <= 0:
            raise ConfigError("sandbox: page_size must be positive")
        if self.issuer is not None and self.issuer.endswith("/"):
            raise ConfigError("sandbox: issuer must not end with '/'")
