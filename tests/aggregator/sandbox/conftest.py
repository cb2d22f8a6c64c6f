"""Fixtures for the sandbox bank tests: two registered clients and a served bank.

``c1`` authenticates with a secret; ``jwt-client`` with ``private_key_jwt`` and the
``client_key`` fixture's EC key. Drivers use a loopback callback on an arbitrary port,
which RFC 8252 §7.3 lets match the port-less registered URI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from aggregator.sandbox import SandboxClient, SandboxConfig
from aggregator.sandbox.testing import ClientKey, FlowDriver, Served, ServeFactory, serve_bank

CLIENT_ID = "c1"
# Long and unmistakable: the log tests look for it as a substring of every line, and a
# two-character secret turned up inside a random PKCE challenge about once in a hundred runs.
CLIENT_SECRET = "sandbox-test-client-secret-7Qx"
JWT_CLIENT_ID = "jwt-client"
REGISTERED_REDIRECT_URI = "http://127.0.0.1/cb"
CALLBACK = "http://127.0.0.1:53682/cb"

ConfigFactory = Callable[..., SandboxConfig]


@pytest.fixture
def client_key() -> ClientKey:
    return ClientKey()


@pytest.fixture
def jwt_client_id() -> str:
    return JWT_CLIENT_ID


@pytest.fixture
def make_config(client_key: ClientKey) -> ConfigFactory:
    """``make_config(require_par=True)``: the two test clients plus those settings."""

    def make(**overrides: Any) -> SandboxConfig:
        clients = [
            SandboxClient(
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                redirect_uris=[REGISTERED_REDIRECT_URI],
                auth_methods=["client_secret_basic", "client_secret_post"],
            ),
            SandboxClient(
                client_id=JWT_CLIENT_ID,
                redirect_uris=[REGISTERED_REDIRECT_URI],
                auth_methods=["private_key_jwt"],
                jwks={"keys": [client_key.public_jwk]},
            ),
        ]
        return SandboxConfig(**{"clients": clients, **overrides})

    return make


@pytest.fixture
def serve(make_config: ConfigFactory) -> ServeFactory:
    """``async with serve(require_par=True) as s:`` serves a fresh bank with those settings."""

    def run(**overrides: Any) -> AbstractAsyncContextManager[Served]:
        return serve_bank(make_config(**overrides))

    return run


@pytest.fixture
async def served(serve: ServeFactory) -> AsyncIterator[Served]:
    async with serve() as s:
        yield s


@pytest.fixture
def new_driver() -> Callable[[Served], FlowDriver]:
    """A driver for ``c1`` on any served bank (for tests that serve their own)."""

    def make(served: Served) -> FlowDriver:
        return FlowDriver(served, CLIENT_ID, CLIENT_SECRET, CALLBACK)

    return make


@pytest.fixture
def driver(served: Served, new_driver: Callable[[Served], FlowDriver]) -> FlowDriver:
    return new_driver(served)
