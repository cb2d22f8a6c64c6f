"""BankOAuthClient end to end against the sandbox bank, over real loopback sockets."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aggregator.sandbox import Faults
from connectors import (
    BankOAuthClient,
    BankUnsupported,
    ConsentRejected,
    GrantRevoked,
    IssuerMismatch,
    PemSigner,
    PendingAuthorization,
    StateMismatch,
    TokenSet,
    parse_callback,
)
from tests.connectors.sandbox_driver import (
    CALLBACK_URI,
    CLIENT_SECRET,
    RunningSandbox,
    consent_in_sandbox,
    running_sandbox,
    sandbox_profile,
)
from vault import Secret

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")


@dataclass
class Linked:
    """A sandbox, a client for it, and helpers to run the front channel."""

    sandbox: RunningSandbox
    client: BankOAuthClient
    http: httpx.AsyncClient

    async def authorize(self, **consent: Any) -> tuple[PendingAuthorization, dict[str, str]]:
        pending, url = await self.client.start_authorization(CALLBACK_URI)
        return pending, await consent_in_sandbox(url, **consent)

    async def link(self) -> TokenSet:
        pending, query = await self.authorize()
        code = parse_callback(pending, query, await self.client.metadata())
        return await self.client.exchange_code(pending, code)

    async def accounts_status(self, tokens: TokenSet) -> int:
        response = await self.http.get(
            f"{self.client.profile.api.base_url}/accounts",
            headers={
                "Authorization": f"Bearer {tokens.access_token}",
                "x-fapi-interaction-id": "00000000-0000-4000-8000-000000000000",
            },
        )
        return response.status_code


LinkFactory = Callable[..., AbstractAsyncContextManager[Linked]]


@pytest.fixture
def linked(ec_pem: bytes) -> LinkFactory:
    """``async with linked(auth_method, use_par=..., require_par=..., faults=...) as l:``."""

    @asynccontextmanager
    async def run(
        auth_method: str = "client_secret_basic",
        *,
        signer: PemSigner | None = None,
        faults: Faults | None = None,
        profile: dict[str, Any] | None = None,
        **config: Any,
    ) -> AsyncIterator[Linked]:
        signer = signer or PemSigner.from_pem(ec_pem, key_id="gw-1")
        jwt = auth_method == "private_key_jwt"
        async with running_sandbox(
            auth_methods=(auth_method,), jwks=signer.public_jwk() if jwt else None, **config
        ) as sandbox:
            if faults is not None:
                sandbox.bank.faults = faults
            fields: dict[str, Any] = {"client_auth_method": auth_method, **(profile or {})}
            if jwt:
                fields |= {
                    "client_secret_env": None,
                    "client_secret_dev_default": None,
                    "private_key_pem_env": "UNUSED_HERE",
                }
            bank_profile = sandbox_profile(sandbox.issuer, **fields)
            async with httpx.AsyncClient() as http:
                client = BankOAuthClient(
                    bank_profile,
                    http,
                    None if jwt else Secret(CLIENT_SECRET),
                    signer if jwt else None,
                )
                yield Linked(sandbox, client, http)

    return run


@pytest.mark.parametrize("use_par", [False, True], ids=["front-channel", "par"])
@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_link_refresh_revoke(linked: LinkFactory, auth_method: str, use_par: bool) -> None:
    async with linked(auth_method, profile={"use_par": use_par}) as bank:
        pending, url = await bank.client.start_authorization(CALLBACK_URI)
        assert ("request_uri=" in url) is use_par
        query = await consent_in_sandbox(url)
        assert query["iss"] == bank.sandbox.issuer

        tokens = await bank.client.exchange_code(
            pending, parse_callback(pending, query, await bank.client.metadata())
        )
        assert tokens.refresh_token is not None
        assert tokens.id_token is not None  # nonce, iss and aud were checked
        assert await bank.accounts_status(tokens) == 200

        refreshed = await bank.client.refresh(tokens.refresh_token)
        assert refreshed.refresh_token not in (None, tokens.refresh_token)
        assert await bank.accounts_status(refreshed) == 200

        assert refreshed.refresh_token is not None
        await bank.client.revoke(refreshed.refresh_token, "refresh_token")
        with pytest.raises(GrantRevoked):
            await bank.client.refresh(refreshed.refresh_token)


async def test_ps256_client_assertion(linked: LinkFactory, rsa_pem: bytes) -> None:
    signer = PemSigner.from_pem(rsa_pem)
    async with linked("private_key_jwt", signer=signer, profile={"use_par": True}) as bank:
        tokens = await bank.link()

    assert tokens.access_token


async def test_bank_requiring_par_gets_pushed_requests(linked: LinkFactory) -> None:
    async with linked(require_par=True) as bank:  # profile: use_par = "auto"
        tokens = await bank.link()

    assert tokens.refresh_token


async def test_bank_requiring_par_refuses_a_profile_without_it(linked: LinkFactory) -> None:
    async with linked(require_par=True, profile={"use_par": False}) as bank:
        with pytest.raises(BankUnsupported, match="PAR"):
            await bank.client.start_authorization(CALLBACK_URI)


async def test_wrong_pkce_verifier_is_refused(linked: LinkFactory) -> None:
    async with linked() as bank:
        pending, query = await bank.authorize()
        code = parse_callback(pending, query, await bank.client.metadata())
        forged = dataclasses.replace(pending, code_verifier=secrets.token_urlsafe(48))

        with pytest.raises(GrantRevoked):
            await bank.client.exchange_code(forged, code)


async def test_replayed_callback_is_refused_and_kills_the_grant(linked: LinkFactory) -> None:
    async with linked() as bank:
        pending, query = await bank.authorize()
        code = parse_callback(pending, query, await bank.client.metadata())
        tokens = await bank.client.exchange_code(pending, code)

        with pytest.raises(GrantRevoked):
            await bank.client.exchange_code(pending, code)
        assert tokens.refresh_token is not None
        with pytest.raises(GrantRevoked):  # code replay revokes what the code bought
            await bank.client.refresh(tokens.refresh_token)


async def test_callback_of_another_session_is_refused(linked: LinkFactory) -> None:
    async with linked() as bank:
        mine, _ = await bank.client.start_authorization(CALLBACK_URI)
        _, theirs = await bank.authorize()

        with pytest.raises(StateMismatch):
            parse_callback(mine, theirs, await bank.client.metadata())


async def test_replayed_state_fails_against_the_next_session(linked: LinkFactory) -> None:
    # The gateway deletes a pending authorization on first use; a replayed callback can
    # then only meet a later session's pending authorization, whose state differs.
    async with linked() as bank:
        first, query = await bank.authorize()
        code = parse_callback(first, query, await bank.client.metadata())
        await bank.client.exchange_code(first, code)
        second, _ = await bank.client.start_authorization(CALLBACK_URI)

        with pytest.raises(StateMismatch):
            parse_callback(second, query, await bank.client.metadata())


async def test_mix_up_is_caught_by_the_iss_check(linked: LinkFactory) -> None:
    async with linked() as honest, linked() as attacker:
        pending, query = await honest.authorize()
        mixed_up = {**query, "iss": attacker.sandbox.issuer}

        with pytest.raises(IssuerMismatch):
            parse_callback(pending, mixed_up, await honest.client.metadata())
        stripped = {k: v for k, v in query.items() if k != "iss"}
        with pytest.raises(IssuerMismatch):  # the sandbox advertises iss: absence is an attack
            parse_callback(pending, stripped, await honest.client.metadata())


@pytest.mark.parametrize("how", ["deny-button", "deny-fault"])
async def test_denied_consent(linked: LinkFactory, how: str) -> None:
    faults = Faults(deny_consent=True) if how == "deny-fault" else None
    async with linked(faults=faults) as bank:
        pending, query = await bank.authorize(decision="deny")

        assert query["error"] == "access_denied"
        with pytest.raises(ConsentRejected):
            parse_callback(pending, query, await bank.client.metadata())


async def test_expired_code_is_refused(linked: LinkFactory) -> None:
    async with linked() as bank:
        pending, query = await bank.authorize()
        code = parse_callback(pending, query, await bank.client.metadata())
        bank.sandbox.bank.advance_clock(61)  # codes live 60 s

        with pytest.raises(GrantRevoked):
            await bank.client.exchange_code(pending, code)


async def test_rotation_keeps_the_newest_and_reuse_revokes_the_grant(linked: LinkFactory) -> None:
    async with linked() as bank:
        tokens = await bank.link()
        chain = [tokens.refresh_token]
        for _ in range(3):
            previous = chain[-1]
            assert previous is not None
            chain.append((await bank.client.refresh(previous)).refresh_token)
        assert len(set(chain)) == 4

        stale = chain[1]
        assert stale is not None
        with pytest.raises(GrantRevoked):
            await bank.client.refresh(stale)
        newest = chain[-1]
        assert newest is not None
        with pytest.raises(GrantRevoked):  # the whole grant is gone after a reuse
            await bank.client.refresh(newest)


async def test_forced_invalid_grant_and_rate_limits(linked: LinkFactory) -> None:
    from connectors import BankUnavailable

    async with linked() as bank:
        tokens = await bank.link()
        assert tokens.refresh_token is not None
        bank.sandbox.bank.faults = Faults(rate_limit_retry_after=7)
        with pytest.raises(BankUnavailable) as caught:
            await bank.client.refresh(tokens.refresh_token)
        assert caught.value.retry_after == 7
        bank.sandbox.bank.faults = Faults(force_invalid_grant=True)
        with pytest.raises(GrantRevoked):
            await bank.client.refresh(tokens.refresh_token)


async def test_no_credential_reaches_the_logs(
    linked: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, authlib's and httpcore's included
    for name in ("authlib", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    secrets_seen: list[str] = [CLIENT_SECRET]
    for use_par in (False, True):
        async with linked("client_secret_post", profile={"use_par": use_par}) as bank:
            pending, query = await bank.authorize()
            code = parse_callback(pending, query, await bank.client.metadata())
            tokens = await bank.client.exchange_code(pending, code)
            assert tokens.refresh_token is not None
            refreshed = await bank.client.refresh(tokens.refresh_token)
            assert refreshed.refresh_token is not None
            await bank.client.revoke(refreshed.refresh_token, "refresh_token")
            with pytest.raises(GrantRevoked):
                await bank.client.refresh(tokens.refresh_token)
            secrets_seen += [code, pending.code_verifier, pending.state]
            secrets_seen += [tokens.access_token, tokens.refresh_token, refreshed.access_token]
            secrets_seen += [refreshed.refresh_token, tokens.id_token or "", pending.nonce or ""]

    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert any(r.name.startswith("authlib") for r in caplog.records)
    text = caplog.text
    leaked = [s for s in secrets_seen if s and s in text]
    assert leaked == []
