"""Driving the sandbox bank from tests, without a browser.

The login and consent pages are plain HTML forms, so an ``httpx`` client can walk them
the way a browser would. :class:`FlowDriver` does that and stops at the redirect to the
client: it reads ``Location`` and never requests the client's redirect URI (nothing
need listen there). Example::

    async with serve_bank(SandboxConfig(clients=[...])) as served:
        driver = FlowDriver(served, client_id="c1", client_secret="s1",
                            redirect_uri="http://127.0.0.1:5000/cb")
        tokens = await driver.tokens(user="alice")

Use :func:`complete_login` alone when your own client code built the authorization
URL (e.g. a connector under test) and only the user's part needs automating.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from aggregator.sandbox.bank import SandboxBank
from aggregator.sandbox.config import DEV_CLIENT_ID, DEV_CLIENT_SECRET, TEST_USERS, SandboxConfig


def sandbox_profile(bank_id: str, issuer: str, *, display_name: str | None = None,
                    secret_env: str = "SANDBOX_BANK_CLIENT_SECRET",  # noqa: S107 - a variable name
                    ) -> str:
    """A bank profile (TOML) for a sandbox bank at ``issuer``, as its dev client links.

    The shape of ``connectors/banks/sandbox-eu.toml`` with another id and issuer, for
    tests and benchmarks that start their own sandbox on a free port.
    """
    return f"""
id = "{bank_id}"
display_name = "{display_name or f'Test {bank_id}'}"
country = "DE"
region = "eu"
issuer = "{issuer}"
scopes = ["openid", "offline_access", "accounts", "transactions"]
use_par = "auto"
hooks = ["prompt_consent_for_offline_access"]
client_id = "{DEV_CLIENT_ID}"
client_auth_method = "client_secret_basic"
client_secret_env = "{secret_env}"
client_secret_dev_default = "{DEV_CLIENT_SECRET}"
[api]
dialect = "obie"
base_url = "/open-banking/v3.1/aisp"
"""


_INTERACTION = re.compile(r'name="interaction" value="([^"]+)"')


def pkce_pair() -> tuple[str, str]:
    """A fresh ``(code_verifier, S256 code_challenge)``."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def interaction_id(page: str) -> str:
    match = _INTERACTION.search(page)
    if match is None:
        raise AssertionError("the page has no sandbox interaction form")
    return match.group(1)


def query_of(location: str) -> dict[str, str]:
    """The query parameters of a redirect ``Location``, one value each."""
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def complete_login(
    http: httpx.AsyncClient,
    authorize_url: str,
    *,
    user: str = "alice",
    password: str | None = None,
    decision: str = "approve",
) -> str:
    """Open ``authorize_url``, sign in, approve or deny; return the client redirect URL."""
    page = await http.get(authorize_url, follow_redirects=False)
    if page.status_code == 302:  # the bank answered at once (error, or deny_consent)
        return page.headers["location"]
    if page.status_code != 200:
        raise AssertionError(f"authorization page answered {page.status_code}")
    iid = interaction_id(page.text)
    base = str(page.url.copy_with(path="/", query=None))
    login = await http.post(
        base + "login",
        data={"interaction": iid, "username": user, "password": password or TEST_USERS[user]},
        follow_redirects=False,
    )
    if login.status_code != 200 or 'value="approve"' not in login.text:
        raise AssertionError(f"sign-in answered {login.status_code}")
    answer = await http.post(
        base + "consent",
        data={"interaction": iid, "decision": decision},
        follow_redirects=False,
    )
    if answer.status_code != 302:
        raise AssertionError(f"consent answered {answer.status_code}")
    return answer.headers["location"]


@dataclass
class ClientKey:
    """An EC P-256 key pair for a ``private_key_jwt`` client (register ``public_jwk``)."""

    private: ECKey = field(
        default_factory=lambda: ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    )
    kid: str = "k1"

    @property
    def public_jwk(self) -> dict[str, Any]:
        return {**self.private.as_dict(private=False), "kid": self.kid}

    def assertion(
        self, audience: str, client_id: str, *, lifetime: int = 60, jti: str | None = None
    ) -> str:
        """A client assertion (RFC 7523 §3) signed ES256."""
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": jti or str(uuid.uuid4()),
            "iat": now,
            "exp": now + lifetime,
        }
        return jwt.encode({"alg": "ES256", "kid": self.kid}, claims, self.private)


@dataclass
class Served:
    bank: SandboxBank
    base_url: str
    http: httpx.AsyncClient


#: ``async with serve(**config_overrides) as served:`` — what a test fixture may hand out.
ServeFactory = Callable[..., AbstractAsyncContextManager[Served]]


@asynccontextmanager
async def serve_bank(config: SandboxConfig | None = None) -> AsyncIterator[Served]:
    """A fresh bank served on loopback, with an HTTP client pointed at it."""
    bank = SandboxBank(config)
    async with (
        bank.serve() as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10) as http,
    ):
        yield Served(bank, base_url, http)


@dataclass
class Callback:
    location: str
    params: dict[str, str]
    verifier: str


class FlowDriver:
    """Runs authorize → sign-in → consent → token for one client with a secret."""

    def __init__(
        self, served: Served, client_id: str, client_secret: str, redirect_uri: str
    ) -> None:
        self.http = served.http
        self.base_url = served.base_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri

    @property
    def auth(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)

    def authorization_params(self, **overrides: str) -> tuple[dict[str, str], str]:
        """Parameters of a valid authorization request, and its code verifier."""
        verifier, challenge = pkce_pair()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "accounts",
            "state": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **overrides,
        }
        return params, verifier

    async def sign_in(self, authorize_response: httpx.Response, user: str = "alice") -> str:
        """Sign in on the page ``authorize_response`` holds; return the interaction id."""
        if authorize_response.status_code != 200:
            raise AssertionError(f"authorization page answered {authorize_response.status_code}")
        iid = interaction_id(authorize_response.text)
        response = await self.http.post(
            "/login", data={"interaction": iid, "username": user, "password": TEST_USERS[user]}
        )
        if response.status_code != 200 or 'value="approve"' not in response.text:
            raise AssertionError(f"sign-in answered {response.status_code}")
        return iid

    async def decide(self, iid: str, decision: str = "approve") -> httpx.Response:
        return await self.http.post("/consent", data={"interaction": iid, "decision": decision})

    async def authorize(
        self, params: dict[str, str], user: str = "alice", decision: str = "approve"
    ) -> str:
        """The front channel, start to end; returns the redirect ``Location``."""
        iid = await self.sign_in(await self.http.get("/authorize", params=params), user)
        answer = await self.decide(iid, decision)
        if answer.status_code != 302:
            raise AssertionError(f"consent answered {answer.status_code}")
        return answer.headers["location"]

    async def code(self, user: str = "alice", **overrides: str) -> Callback:
        params, verifier = self.authorization_params(**overrides)
        location = await self.authorize(params, user)
        return Callback(location, query_of(location), verifier)

    async def exchange(self, callback: Callback, **extra: str) -> httpx.Response:
        data = {
            "grant_type": "authorization_code",
            "code": callback.params["code"],
            "redirect_uri": self.redirect_uri,
            "code_verifier": callback.verifier,
            **extra,
        }
        return await self.http.post("/token", data=data, auth=self.auth)

    async def tokens(self, user: str = "alice", scope: str = "accounts") -> dict[str, Any]:
        response = await self.exchange(await self.code(user, scope=scope))
        if response.status_code != 200:
            raise AssertionError(f"token endpoint answered {response.status_code}")
        body: dict[str, Any] = response.json()
        return body

    async def refresh(self, refresh_token: str) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self.http.post("/token", data=data, auth=self.auth)

    async def accounts(self, access_token: str, **headers: str) -> httpx.Response:
        return await self.http.get(
            "/open-banking/v3.1/aisp/accounts",
            headers={"Authorization": f"Bearer {access_token}", **headers},
        )
