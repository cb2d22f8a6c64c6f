"""The OAuth2 client for one bank: authorization code + PKCE, PAR, refresh, revocation.

Built on authlib's client for the token calls and PKCE; discovery (RFC 8414), pushed
requests (RFC 9126), the ``iss`` check (RFC 9207) and the ``private_key_jwt`` assertion
(RFC 7523), mutual-TLS client authentication with its endpoint aliases (RFC 8705) and
DPoP proofs (RFC 9449) are ours, in the modules named after them. Every outbound call goes through
the injected ``httpx.AsyncClient`` with a timeout, inside :func:`map_bank_errors`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx
from authlib.integrations.base_client import OAuthError
from authlib.oauth2.client import DEFAULT_HEADERS
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from connectors._schema import url_problem
from connectors.errors import (
    MISCONFIGURATIONS,
    BankMisconfigured,
    BankProtocolError,
    BankUnsupported,
    GrantRevoked,
)
from connectors.logging import install_redaction
from connectors.oauth._authlib import AuthlibClient, ResponseHook
from connectors.oauth.boundary import error_code, map_bank_errors, raise_for_unavailable
from connectors.oauth.compat import Compatibility, Severity, check_compatibility
from connectors.oauth.credentials import load_client_credentials
from connectors.oauth.hybrid import BankKeys, check_detached_id_token
from connectors.oauth.oidc import check_id_token
from connectors.oauth.pending import PendingAuthorization
from connectors.oauth.rfc7523 import ASSERTION_TYPE, Signer, build_client_assertion
from connectors.oauth.rfc8414 import ServerMetadata, fetch_metadata
from connectors.oauth.rfc8705 import apply_mtls_aliases, tls_client_auth
from connectors.oauth.rfc9126 import authorization_url, push_authorization_request
from connectors.oauth.rfc9449 import (
    TOKEN_TYPE,
    DPoPAuth,
    DPoPKey,
    DPoPNonces,
    choose_algorithm,
)
from connectors.oauth.tokens import TokenSet
from connectors.profiles import BankProfile, ClientAuthMethod, SenderConstraint
from vault import Secret

__all__ = ["BankOAuthClient"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class BankOAuthClient:
    """Links and maintains grants at one bank; safe to share between tasks.

    `client_secret` is required for the ``client_secret_*`` methods and `private_key`
    (a :class:`~connectors.oauth.rfc7523.Signer`, e.g. ``PemSigner.from_pem(...)``) for
    ``private_key_jwt``; :meth:`from_environment` resolves both from the profile's
    references. For a profile with a transport certificate (``tls_client_auth``, or any
    method with certificate-bound tokens), `http` must present it: build it with
    :func:`connectors.bank_http_client`. The flow::

        client = BankOAuthClient(profile, http, client_secret=Secret("..."))
        pending, url = await client.start_authorization("https://gw.example/callback")
        # store `pending` sealed, redirect the browser to `url`; on the callback:
        code = parse_callback(pending, request.query_params, await client.metadata())
        tokens = await client.exchange_code(pending, code)
        tokens = await client.refresh(tokens.refresh_token)
        await client.revoke(tokens.refresh_token, "refresh_token")

    With ``sender_constraint = "dpop"`` (RFC 9449) :meth:`start_authorization` makes the
    connection's key (``pending.dpop_key``, sent as ``dpop_jkt``), the code exchange
    proves it, and :meth:`refresh` needs it back (``dpop_key=``); resource calls use
    :meth:`dpop_auth`. A token endpoint demanding a nonce (``use_dpop_nonce``, §8) gets
    exactly one retry with the nonce it sent; nonces are kept per bank in :attr:`nonces`.

    Errors are :class:`~connectors.errors.ConnectorError` subclasses only: ``invalid_grant``
    → ``GrantRevoked``; timeouts, network errors, 5xx and 429 → ``BankUnavailable``
    (with ``retry_after``); malformed answers → ``BankProtocolError``; a bank lacking what
    the profile needs → ``BankUnsupported`` (raised by :meth:`metadata`).
    """

    def __init__(
        self,
        profile: BankProfile,
        http: httpx.AsyncClient,
        client_secret: Secret | None = None,
        private_key: Signer | None = None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        method = profile.client_auth_method
        if method.uses_secret and not client_secret:
            raise ValueError(f"{profile.id}: {method.value} needs a client secret")
        if method is ClientAuthMethod.PRIVATE_KEY_JWT and private_key is None:
            raise ValueError(f"{profile.id}: private_key_jwt needs a private key signer")
        self._profile = profile
        self._http = http
        self._secret = client_secret
        self._signer = private_key
        self._timeout = timeout
        self._clock = clock
        self._metadata: ServerMetadata | None = None
        self._plan: Compatibility | None = None
        self._discovery_lock = asyncio.Lock()
        self._refresher: AuthlibClient | None = None
        self._keys: BankKeys | None = None
        #: The bank's DPoP nonces (RFC 9449 §8, §9), shared by all its connections.
        self.nonces = DPoPNonces()
        install_redaction()

    @classmethod
    def from_environment(
        cls,
        profile: BankProfile,
        http: httpx.AsyncClient,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> BankOAuthClient:
        """Build the client with the secret or key the profile names (env var or file)."""
        secret, signer = load_client_credentials(profile, environ)
        return cls(profile, http, secret, signer, **kwargs)

    @property
    def profile(self) -> BankProfile:
        return self._profile

    @property
    def signer(self) -> Signer | None:
        """The client's signing key (private_key_jwt, request objects), never its bytes."""
        return self._signer

    @property
    def http(self) -> httpx.AsyncClient:
        """The client calls to this bank go through (it may present a certificate)."""
        return self._http

    async def client_credentials(self, scope: str) -> TokenSet:
        """A token for the client itself (RFC 6749 §4.4), e.g. OBIE's ``accounts`` scope.

        Authenticated like every token request (private_key_jwt, mTLS); used to manage
        consent resources, never to read a user's data.
        """
        metadata = await self.metadata()
        oauth = await self._authlib(metadata)
        with map_bank_errors(self._profile.id, "client credentials"):
            data = await oauth.fetch_token(
                metadata.token_endpoint, grant_type="client_credentials", scope=scope,
                timeout=self._timeout,
            )
        return TokenSet.from_response(data, now=self._clock(), requested_scope=scope)

    async def metadata(self) -> ServerMetadata:
        """The bank's metadata, discovered once per client and checked against the profile.

        Call it at start-up to fail early: it raises ``BankUnsupported`` listing every
        problem, and logs the warnings (plain PKCE, missing revocation endpoint, ...).
        """
        if self._metadata is None:
            async with self._discovery_lock:
                if self._metadata is None:
                    metadata = await self._discover()
                    plan = check_compatibility(
                        self._profile,
                        metadata,
                        signing_alg=self._signer.algorithm if self._signer else None,
                    )
                    for finding in plan.findings:
                        if finding.severity is Severity.WARNING:
                            log.warning("bank %s: %s", self._profile.id, finding.message)
                    if not plan.ok:
                        problems = "; ".join(f.message for f in plan.problems)
                        par = any(f.topic == "par" for f in plan.problems)
                        reason = "par_required" if par else "unsupported"
                        raise BankMisconfigured(f"{self._profile.id}: {problems}",
                                                reason=reason,
                                                setting=MISCONFIGURATIONS[reason])
                    self._plan, self._metadata = plan, metadata
        return self._metadata

    async def start_authorization(
        self, redirect_uri: str, *, state: str | None = None,
        customize: Callable[[dict[str, str]], Awaitable[dict[str, str]]] | None = None,
    ) -> tuple[PendingAuthorization, str]:
        """Begin a link: return what to store and the URL to send the browser to.

        Always PKCE (S256, or plain only where the profile allows it and the bank lacks
        S256), a fresh `state`, a `nonce` when ``openid`` is in scope, and PAR when the
        profile asks for it or the bank requires it. ``customize`` rewrites the finished
        parameters before they are pushed or put in the URL: a consent standard's hook
        (:meth:`connectors.consents.ConsentManager.authorization_params`), e.g. a signed
        request object (RFC 9101) that carries them all.
        """
        problem = url_problem(redirect_uri)
        if problem:
            raise ValueError(f"redirect_uri: {problem}")
        metadata = await self.metadata()
        plan = self._plan
        # Both are set together with the metadata; a missing PKCE method fails there.
        assert plan is not None
        assert plan.pkce_method is not None
        profile = self._profile
        pending = PendingAuthorization.new(
            profile.id, redirect_uri, with_nonce="openid" in profile.scopes, now=self._clock(),
            state=state,
        )
        params = self._authorization_params(redirect_uri)
        if profile.sender_constraint is SenderConstraint.DPOP:
            # RFC 9449 §10: `dpop_jkt` binds the code to this connection's key, so a
            # stolen code cannot be redeemed with another key.
            key = DPoPKey.generate(
                choose_algorithm(_algs(metadata.raw.get("dpop_signing_alg_values_supported")))
            )
            pending = dataclasses.replace(pending, dpop_key=key.private_bytes().decode("ascii"))
            params["dpop_jkt"] = key.thumbprint
        params["state"] = pending.state
        params["code_challenge_method"] = plan.pkce_method
        params["code_challenge"] = (
            create_s256_code_challenge(pending.code_verifier)
            if plan.pkce_method == "S256"
            else pending.code_verifier
        )
        if pending.nonce is not None:
            params["nonce"] = pending.nonce
        if customize is not None:
            params = await customize(params)
        if not plan.use_par:
            return pending, authorization_url(metadata.authorization_endpoint, params)
        endpoint = metadata.pushed_authorization_request_endpoint
        assert endpoint is not None  # the plan uses PAR only when there is an endpoint
        oauth = await self._authlib(metadata)
        pushed = await push_authorization_request(
            self._http,
            endpoint,
            params,
            auth=oauth.client_auth(profile.client_auth_method.value),
            http_timeout=self._timeout,
            bank=profile.id,
        )
        # RFC 9126 §4: the front channel carries only the client id and the reference.
        url = authorization_url(
            metadata.authorization_endpoint,
            {"client_id": profile.client_id, "request_uri": pushed.request_uri},
        )
        return pending, url

    async def check_front_channel(
        self, pending: PendingAuthorization, response: Mapping[str, str],
        expected: Mapping[str, str] | None = None,
    ) -> None:
        """Verify the hybrid response's ID token before its code is used
        (:mod:`connectors.oauth.hybrid`; FAPI 1 Advanced §5.2.2.1)."""
        metadata = await self.metadata()
        if metadata.jwks_uri is None:
            raise BankUnsupported(f"{self._profile.id}: no jwks_uri to verify ID tokens")
        if self._keys is None:
            self._keys = BankKeys(self._http, metadata.jwks_uri, self._profile.id)
        await check_detached_id_token(
            response, keys=self._keys, issuer=metadata.issuer,
            client_id=self._profile.client_id, nonce=pending.nonce, now=self._clock(),
            expected=expected,
        )

    async def exchange_code(self, pending: PendingAuthorization, code: str) -> TokenSet:
        """Trade the callback's code for tokens (RFC 6749 §4.1.3, RFC 7636 §4.5).

        Sends the verifier and the very `redirect_uri` of the authorization request;
        checks the ID token's issuer, audience, expiry and nonce when one comes back.
        """
        if pending.bank_id != self._profile.id:
            raise ValueError(f"pending authorization of {pending.bank_id}, not {self._profile.id}")
        metadata = await self.metadata()
        dpop = DPoPKey.from_private_bytes(pending.dpop_key) if pending.dpop_key else None

        async def call(oauth: AuthlibClient, headers: dict[str, str]) -> Any:
            return await oauth.fetch_token(
                metadata.token_endpoint,
                grant_type="authorization_code",
                code=code,
                redirect_uri=pending.redirect_uri,
                code_verifier=pending.code_verifier,
                headers=headers,
                timeout=self._timeout,
            )

        data = await self._token_request(metadata, "code exchange", call, dpop)
        now = self._clock()
        tokens = TokenSet.from_response(
            data, now=now, requested_scope=self._profile.scope,
            consent_expiry_field=self._profile.consent.expiry_field,
            token_type=TOKEN_TYPE if dpop else "Bearer",
        )
        if tokens.id_token is not None:
            check_id_token(
                tokens.id_token,
                issuer=metadata.issuer,
                client_id=self._profile.client_id,
                nonce=pending.nonce,
                now=now,
            )
        return tokens

    async def refresh(self, refresh_token: str, *, dpop_key: DPoPKey | None = None) -> TokenSet:
        """Use `refresh_token` once (RFC 6749 §6) and return the new tokens.

        A bank that rotates sends a new refresh token, and the old one is dead from now
        on: persist the result before anything else. A bank that does not rotate sends
        none, and the old one is kept in the result. Never retry with a token a bank may
        already have retired (docs/architecture.md, "Refreshing"); the one DPoP nonce
        retry is safe, as a refused proof never reaches the grant (RFC 9449 §8).

        At a DPoP bank, `dpop_key` is the connection's key: the new access token is bound
        to the same key as the grant (§5). A connection linked before its profile asked
        for DPoP holds none, and only the user can fix that (:class:`GrantRevoked`).
        """
        metadata = await self.metadata()
        if self._profile.sender_constraint is SenderConstraint.DPOP and dpop_key is None:
            raise GrantRevoked(f"{self._profile.id}: the grant holds no DPoP key; re-link")

        async def call(oauth: AuthlibClient, headers: dict[str, str]) -> Any:
            return await oauth.refresh_token(
                metadata.token_endpoint, refresh_token=refresh_token, headers=headers,
                timeout=self._timeout,
            )

        data = await self._token_request(metadata, "refresh", call, dpop_key)
        return TokenSet.from_response(
            data, now=self._clock(), previous_refresh_token=refresh_token,
            token_type=TOKEN_TYPE if dpop_key else "Bearer",
        )

    def dpop_auth(self, key: DPoPKey, access_token: str) -> DPoPAuth:
        """The ``httpx.Auth`` of one connection's resource calls (RFC 9449 §7, §9)."""
        return DPoPAuth(key, access_token, self.nonces, clock=self._clock)

    async def _token_request(
        self,
        metadata: ServerMetadata,
        operation: str,
        call: Callable[[AuthlibClient, dict[str, str]], Any],
        dpop: DPoPKey | None,
    ) -> Any:
        """One token endpoint call; with DPoP, a proof and at most one nonce retry (§8)."""
        endpoint = metadata.token_endpoint
        used: str | None = None
        for attempt in (1, 2):
            oauth = await self._client_for_token(metadata)
            headers = dict(DEFAULT_HEADERS)
            if dpop is not None:
                used = self.nonces.get("token", endpoint)
                headers["DPoP"] = dpop.proof("POST", endpoint, nonce=used, now=self._clock())
            with map_bank_errors(self._profile.id, operation):
                try:
                    data = await call(oauth, headers)
                except OAuthError as exc:
                    fresh = self.nonces.get("token", endpoint)
                    if (dpop is not None and attempt == 1 and exc.error == "use_dpop_nonce"
                            and fresh is not None and fresh != used):
                        log.info("bank %s: %s: DPoP nonce required; retrying once",
                                 self._profile.id, operation)
                        continue
                    raise
            # authlib sets and returns ``oauth.token`` with no await in between, so
            # concurrent calls each get their own answer; a shared client keeps none.
            oauth.token = None
            return data
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _client_for_token(self, metadata: ServerMetadata) -> AuthlibClient:
        oauth = self._refresher
        if oauth is None or self._signer is not None:
            # A private_key_jwt assertion is single-use (RFC 7523 §3 "jti"): a client per
            # call. Otherwise one client serves every call: building one per call took
            # ~7 % of a refresh's CPU in the worker (bench/refresh_bench.py).
            oauth = await self._authlib(metadata)
            self._refresher = oauth if self._signer is None else None
        return oauth

    async def revoke(
        self,
        token: str,
        token_type_hint: Literal["access_token", "refresh_token"] | None = None,
    ) -> None:
        """Revoke `token` at the bank (RFC 7009 §2.1); an unknown token is success (§2.2).

        Revoking a refresh token ends the whole grant at most banks; revoking only the
        access token may end it too (§2.1 allows it), so do not expect the grant to
        survive either.
        """
        metadata = await self.metadata()
        endpoint = metadata.revocation_endpoint
        if endpoint is None:
            raise BankUnsupported(f"{self._profile.id}: the bank has no revocation endpoint")
        oauth = await self._authlib(metadata)
        with map_bank_errors(self._profile.id, "revocation"):
            response = await oauth.revoke_token(
                endpoint, token=token, token_type_hint=token_type_hint, timeout=self._timeout
            )
        raise_for_unavailable(response, self._profile.id, "revocation")  # §2.2.1: 503
        if response.status_code >= 300:
            code = _error_of(response)
            raise BankProtocolError(
                f"{self._profile.id}: revocation: HTTP {response.status_code} {code}".rstrip()
            )

    def _authorization_params(self, redirect_uri: str) -> dict[str, str]:
        profile = self._profile
        fixed = {
            "response_type": "code",
            "client_id": profile.client_id,
            "redirect_uri": redirect_uri,
        }
        params: dict[str, str] = {**fixed, "scope": profile.scope, **profile.extra_authorize_params}
        for hook in profile.hooks:
            if hook.authorize_params is not None:
                params = hook.authorize_params(params)
        return {**params, **fixed}  # a hook may add or adjust, never redirect elsewhere

    async def _discover(self) -> ServerMetadata:
        profile = self._profile
        if profile.discovery:
            metadata = await fetch_metadata(
                self._http, profile.issuer, http_timeout=self._timeout, bank=profile.id
            )
        else:
            # Without discovery the profile vouches for the bank: PKCE S256 and its own
            # client authentication method.
            method = (profile.client_auth_method.value,)
            metadata = ServerMetadata(
                issuer=profile.issuer,
                authorization_endpoint=profile.endpoints.authorization or "",
                token_endpoint=profile.endpoints.token or "",
                source="profile",
                code_challenge_methods_supported=("S256",),
                token_endpoint_auth_methods_supported=method,
                revocation_endpoint_auth_methods_supported=method,
            )
        if profile.mutual_tls:
            metadata = apply_mtls_aliases(metadata)  # RFC 8705 §5; the profile still wins
        endpoints = profile.endpoints
        return dataclasses.replace(
            metadata,
            authorization_endpoint=endpoints.authorization or metadata.authorization_endpoint,
            token_endpoint=endpoints.token or metadata.token_endpoint,
            pushed_authorization_request_endpoint=endpoints.par
            or metadata.pushed_authorization_request_endpoint,
            revocation_endpoint=endpoints.revocation or metadata.revocation_endpoint,
        )

    async def _authlib(self, metadata: ServerMetadata) -> AuthlibClient:
        profile = self._profile
        method = profile.client_auth_method.value
        oauth = AuthlibClient(
            self._http,
            client_id=profile.client_id,
            client_secret=self._secret.reveal() if self._secret else None,
            token_endpoint_auth_method=method,
            revocation_endpoint_auth_method=method,
        )
        if self._signer is not None and method == ClientAuthMethod.PRIVATE_KEY_JWT:
            assertion = await build_client_assertion(
                self._signer,
                client_id=profile.client_id,
                audience=metadata.issuer,
                now=self._clock(),
            )
            oauth.register_client_auth_method((method, _AssertionAuth(assertion)))
        elif profile.client_auth_method.uses_certificate:
            oauth.register_client_auth_method((method, tls_client_auth))
        else:
            oauth.register_client_auth_method(("client_secret_basic", _encoded_basic_auth))
            oauth.register_client_auth_method(("client_secret_post", _post_auth))
        hook = _token_response_hook(profile, self.nonces, metadata.token_endpoint)
        oauth.register_compliance_hook("access_token_response", hook)
        oauth.register_compliance_hook("refresh_token_response", hook)
        return oauth


def _encoded_basic_auth(
    auth: Any, method: str, uri: str, headers: Any, body: str | bytes | None
) -> tuple[str, Any, str | bytes | None]:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding; authlib
    # skips that step, so a secret with ':' or '%' fails at a strict server.
    credentials = f"{quote_plus(auth.client_id)}:{quote_plus(auth.client_secret or '')}"
    headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return uri, headers, body


def _post_auth(
    auth: Any, method: str, uri: str, headers: Any, body: str | bytes | None
) -> tuple[str, Any, str]:
    # RFC 6749 §3.2: no parameter twice. A pushed request (RFC 9126 §2.1) already has
    # client_id; authlib's client_secret_post would add a second one.
    text = body.decode() if isinstance(body, bytes) else (body or "")
    params = httpx.QueryParams(text)
    if "client_id" not in params:
        params = params.add("client_id", auth.client_id)
    return uri, headers, str(params.add("client_secret", auth.client_secret or ""))


class _AssertionAuth:
    """authlib client-auth callable adding one precomputed assertion (RFC 7523 §2.2)."""

    def __init__(self, assertion: str) -> None:
        self._assertion = assertion

    def __call__(
        self, auth: Any, method: str, uri: str, headers: Any, body: str | bytes | None
    ) -> tuple[str, Any, str]:
        text = body.decode() if isinstance(body, bytes) else (body or "")
        extra = httpx.QueryParams(
            {"client_assertion_type": ASSERTION_TYPE, "client_assertion": self._assertion}
        )
        return uri, headers, f"{text}&{extra}" if text else str(extra)

    def __repr__(self) -> str:
        return "_AssertionAuth('***')"


def _token_response_hook(profile: BankProfile, nonces: DPoPNonces, endpoint: str) -> ResponseHook:
    """One authlib compliance hook: the DPoP nonce (RFC 9449 §8.2), 429/5xx, then the
    profile's hooks in order."""
    hooks = [h.token_response for h in profile.hooks if h.token_response is not None]

    def hook(response: httpx.Response) -> httpx.Response:
        nonces.learn("token", endpoint, response)
        raise_for_unavailable(response, profile.id, "token request")
        if not hooks:
            return response
        try:
            data = response.json()
        except ValueError:
            return response
        if not isinstance(data, dict):
            return response
        for fn in hooks:
            data = fn(data)
        return httpx.Response(response.status_code, json=data, request=response.request)

    return hook


def _algs(value: object) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [a for a in value if isinstance(a, str)]


def _error_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return error_code(body.get("error")) if isinstance(body, dict) and "error" in body else ""
