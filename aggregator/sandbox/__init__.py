"""A sandbox bank: a real OAuth2 authorization server plus an OBIE v3.1 account API.

Built on authlib's server side and served by Starlette + uvicorn on loopback, with all
state in memory. It exists so the gateway's linking, refreshing and syncing code can be
tested end to end against something as strict as a real bank::

    from aggregator.sandbox import SandboxBank, SandboxClient, SandboxConfig

    bank = SandboxBank(SandboxConfig(clients=[SandboxClient(
        client_id="c1", client_secret="s1", redirect_uris=["http://127.0.0.1/cb"])]))
    async with bank.serve() as issuer:
        ...

What it enforces: PKCE S256 on every request; single-use codes that live 60 s; PAR
(RFC 9126), optionally required; ``iss`` on every authorization response (RFC 9207);
``client_secret_basic``, ``client_secret_post`` and ``private_key_jwt`` (PS256/ES256,
single-use ``jti``); refresh-token rotation where replaying a used refresh token (or
code) revokes the whole grant; revocation (RFC 7009); ID tokens for ``openid``.

Sandbox-only credentials, public on purpose (they protect nothing):

- test users (``TEST_USERS``): ``alice`` / ``alice-pass`` and ``bob`` / ``bob-pass``;
- default client (``DEV_CLIENT_ID`` / ``DEV_CLIENT_SECRET``): ``sandbox-dev-client`` /
  ``sandbox-dev-secret``, redirect URIs ``http://127.0.0.1/callback`` and
  ``http://localhost/callback`` (any port, RFC 8252 §7.3).

Endpoints: ``/.well-known/oauth-authorization-server``, ``/.well-known/openid-configuration``,
``/authorize``, ``/login``, ``/consent``, ``/token``, ``/par``, ``/revoke``, ``/jwks``,
``/open-banking/v3.1/aisp/accounts[/{AccountId}[/balances|/transactions]]``, and, from
loopback peers only, ``GET|POST /_sandbox/faults``, ``POST /_sandbox/advance-day`` and
``POST /_sandbox/advance-clock`` (``{"seconds": N}``).

Every sandbox bank also speaks Berlin Group NextGenPSD2 (the ``sandbox-berlin`` profile;
:mod:`aggregator.sandbox.berlin_api`): ``/xs2a/oauth/v1/...`` (OAuth2 SCA approach, scope
``AIS:{consentId}``) and ``/xs2a/redirect/v1/...`` (redirect approach, SCA pages under
``/xs2a/sca/``), with ``POST /_sandbox/xs2a/consents/{id}/revoke`` and
``POST /_sandbox/xs2a/settings`` (``require_signatures``, ``status_lag``) from loopback.
"""

from aggregator.sandbox.bank import SandboxBank
from aggregator.sandbox.config import (
    DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
    TEST_USERS,
    Faults,
    SandboxClient,
    SandboxConfig,
    dev_client,
)

__all__ = [
    "DEV_CLIENT_ID",
    "DEV_CLIENT_SECRET",
    "TEST_USERS",
    "Faults",
    "SandboxBank",
    "SandboxClient",
    "SandboxConfig",
    "dev_client",
]
