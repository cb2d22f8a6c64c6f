"""Drive the sandbox bank's sign-in and consent pages the way a browser would.

Reusable from any test (``from tests.connectors.sandbox_driver import ...``): it needs
only an authorization URL, follows no redirect to the client's redirect URI (nothing
listens there) and hands back the callback's query parameters, which is exactly what the
gateway's callback endpoint would receive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import httpx

from aggregator.sandbox import SandboxBank, SandboxClient, SandboxConfig
from aggregator.sandbox.testing import complete_login
from connectors import BankProfile, load_profiles

#: Registered at every test sandbox; loopback redirect URIs match any port (RFC 8252 §7.3).
REDIRECT_URI = "http://127.0.0.1/callback"
CALLBACK_URI = "http://127.0.0.1:8700/callback"
CLIENT_ID = "gateway-test"
CLIENT_SECRET = "gateway-test-secret"


@dataclass(frozen=True)
class RunningSandbox:
    bank: SandboxBank
    issuer: str


@asynccontextmanager
async def running_sandbox(
    *,
    auth_methods: tuple[str, ...] = ("client_secret_basic", "client_secret_post"),
    jwks: Mapping[str, Any] | None = None,
    **config: Any,
) -> AsyncIterator[RunningSandbox]:
    """A sandbox bank on a free loopback port with one client, :data:`CLIENT_ID`."""
    client = SandboxClient(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET if set(auth_methods) - {"private_key_jwt"} else None,
        redirect_uris=[REDIRECT_URI],
        auth_methods=list(auth_methods),
        jwks=jwks,
    )
    bank = SandboxBank(SandboxConfig(clients=[client], **config))
    async with bank.serve(host="127.0.0.1", port=0) as issuer:
        yield RunningSandbox(bank, issuer)


def sandbox_profile(issuer: str, **overrides: Any) -> BankProfile:
    """The built-in ``sandbox-eu`` profile pointed at `issuer` and the test client.

    `overrides` use the loader's syntax (``None`` removes a key), e.g.
    ``client_auth_method="private_key_jwt", private_key_pem_env="KEY",
    client_secret_env=None, client_secret_dev_default=None``.
    """
    fields = {"issuer": issuer, "client_id": CLIENT_ID, **overrides}
    return load_profiles([], {"sandbox-eu": fields})["sandbox-eu"]


def callback_query(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))


async def consent_in_sandbox(
    authorization_url: str,
    *,
    user: str = "alice",
    password: str | None = None,
    decision: Literal["approve", "deny"] = "approve",
    http_timeout: float = 10.0,
) -> dict[str, str]:
    """Open `authorization_url`, sign in as `user`, answer the consent page; return the
    query of the redirect back to the client (``code``/``error``, ``state``, ``iss``).

    If the bank answers the authorization request with a redirect straight away (an
    error, or ``Faults(deny_consent=True)``), that redirect's query is returned. The
    page walking itself is the sandbox's own :func:`complete_login`.
    """
    async with httpx.AsyncClient(timeout=http_timeout) as browser:
        location = await complete_login(
            browser, authorization_url, user=user, password=password, decision=decision
        )
    return callback_query(location)
