"""A scripted authorization server behind ``httpx.MockTransport``, and client factories."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from connectors import BankOAuthClient, BankProfile, PemSigner, load_profiles
from vault import Secret

ISSUER = "https://bank.test"
CLIENT_ID = "gw-client"
CLIENT_SECRET = "gw-secret-value"
REDIRECT_URI = "https://gateway.test/callback"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


def metadata_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "pushed_authorization_request_endpoint": f"{ISSUER}/par",
        "revocation_endpoint": f"{ISSUER}/revoke",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": ["PS256", "ES256"],
        "authorization_response_iss_parameter_supported": True,
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def token_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": "at-1",
        "token_type": "Bearer",
        "expires_in": 300,
        "refresh_token": "rt-1",
        "scope": "openid offline_access accounts transactions",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@dataclass
class FakeBank:
    """Answers discovery from `metadata`; other paths from the `replies` queue per path."""

    metadata: dict[str, Any] = field(default_factory=metadata_document)
    replies: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    #: When set, every request gets this answer (an outage).
    down: httpx.Response | None = None

    def reply(self, path: str, *replies: Reply) -> None:
        self.replies.setdefault(path, []).extend(replies)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down is not None:
            return self.down
        path = request.url.path
        if path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json=self.metadata)
        queue = self.replies.get(path)
        if not queue:
            return httpx.Response(404, json={"error": "not_scripted"})
        reply = queue.pop(0)
        return reply(request) if callable(reply) else reply

    def sent(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]


def form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode()))


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def profile_for(auth_method: str = "client_secret_basic", **overrides: Any) -> BankProfile:
    fields: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "client_auth_method": auth_method,
        "client_secret_dev_default": None,
    }
    if auth_method == "private_key_jwt":
        fields |= {"client_secret_env": None, "private_key_pem_env": "TEST_CLIENT_KEY"}
    return load_profiles([], {"sandbox-eu": {**fields, **overrides}})["sandbox-eu"]


ClientFactory = Callable[..., BankOAuthClient]


@pytest.fixture
def bank() -> FakeBank:
    return FakeBank()


@pytest.fixture
async def http(bank: FakeBank) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(bank.handler)) as client:
        yield client


@pytest.fixture
def make_client(http: httpx.AsyncClient, ec_pem: bytes) -> ClientFactory:
    """``make_client(auth_method="client_secret_post", use_par=True, ...)``."""

    def make(auth_method: str = "client_secret_basic", **overrides: Any) -> BankOAuthClient:
        profile = profile_for(auth_method, **overrides)
        if auth_method == "private_key_jwt":
            return BankOAuthClient(profile, http, None, PemSigner.from_pem(ec_pem))
        return BankOAuthClient(profile, http, Secret(CLIENT_SECRET))

    return make
