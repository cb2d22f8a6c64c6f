"""authlib's :class:`AuthorizationServer`, wired for Starlette and a strict bank.

authlib ships no Starlette server integration, so :class:`SandboxAuthorizationServer`
implements the four framework hooks itself (``create_oauth2_request``,
``create_json_request``, ``handle_response``, ``send_signal``) over requests that
:mod:`aggregator.sandbox.requests` has already parsed. What it adds to authlib's grants:

- PKCE is mandatory and S256 only (RFC 9700 §2.1.1), so ``plain`` and a missing
  challenge are refused at the authorization endpoint;
- refresh tokens rotate on every use and a replayed one revokes the grant (RFC 9700
  §4.14.2), as do replayed authorization codes (RFC 6749 §4.1.2);
- every authorization response redirect carries ``iss`` (RFC 9207 §2);
- an ``openid`` scope adds an ES256 ID token (OIDC Core §3.1.3.3).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    InvalidRequestError,
    InvalidScopeError,
    JsonRequest,
    OAuth2Request,
    grants,
    scope_to_list,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, UserInfo
from joserfc.jwk import ECKey
from starlette.responses import JSONResponse, Response

from aggregator.sandbox.config import CLIENT_AUTH_METHODS, SCOPES, SandboxClient, SandboxConfig
from aggregator.sandbox.discovery import ID_TOKEN_ALGORITHM, REGISTER_PATH
from aggregator.sandbox.middleware import current_issuer
from aggregator.sandbox.models import (
    AuthorizationCode,
    ClientModel,
    RevocationTarget,
    TokenRecord,
    digest,
)
from aggregator.sandbox.requests import SandboxOAuth2Request
from aggregator.sandbox.rfc7523 import PrivateKeyJWT
from aggregator.sandbox.rfc7591 import (
    RegistrationToken,
    SandboxConfigurationEndpoint,
    SandboxRegistrationEndpoint,
    registered_model,
)
from aggregator.sandbox.rfc9126 import PushedAuthorizationEndpoint, PushedRequests
from aggregator.sandbox.store import IssuedTokens, SandboxClock, TokenStore

log = logging.getLogger(__name__)


class _DropTokenDebugLines(logging.Filter):
    """authlib logs whole token responses at DEBUG ("Issue token %r"); we never do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Issue token")


for _name in ("authorization_code", "refresh_token"):
    logging.getLogger(f"authlib.oauth2.rfc6749.grants.{_name}").addFilter(_DropTokenDebugLines())


class ScopeHook(Protocol):
    """Scopes beyond :data:`SCOPES` that name a resource, e.g. ``AIS:{consentId}``.

    ``accepts`` is asked at the authorization endpoint; ``decided`` hears the user's
    answer: approved by ``user``, or refused (``None``). See
    :mod:`aggregator.sandbox.berlin_sca`.
    """

    def accepts(self, scope: str) -> bool: ...

    def decided(self, scopes: Iterable[str], user: str | None) -> None: ...


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE, required for every client, S256 only."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send 'code_challenge'.")
        if data.get("code_challenge_method") != "S256":
            # RFC 7636 §4.3: an absent method means "plain", which we refuse too.
            raise InvalidRequestError("Only 'code_challenge_method' S256 is supported.")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        server: SandboxAuthorizationServer = self.server
        data = request.payload.data
        now = server.clock.now()
        server.scopes_decided(request.scope, request.user)
        server.store.save_code(
            AuthorizationCode(
                code_hash=digest(code),
                client_id=request.client.get_client_id(),
                redirect_uri=data.get("redirect_uri"),
                scope=request.scope,
                user=request.user,
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                nonce=data.get("nonce"),
                auth_time=int(time.time()),
                expires_at=now + server.config.code_ttl,
                dpop_jkt=data.get("dpop_jkt"),
            )
        )

    def query_authorization_code(self, code: str, client: ClientModel) -> AuthorizationCode | None:
        server: SandboxAuthorizationServer = self.server
        return server.store.take_code(code, client.get_client_id())

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        # Kept, marked used by save_token: a replay must find it to revoke the grant.
        pass

    def authenticate_user(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.user


class RotatingRefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        server: SandboxAuthorizationServer = self.server
        return server.store.find_refresh(refresh_token, self.request.client.get_client_id())

    def authenticate_user(self, refresh_token: TokenRecord) -> str:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        server: SandboxAuthorizationServer = self.server
        server.store.retire_refresh(refresh_token)


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009; a refresh token takes its whole grant with it, an access token itself."""

    CLIENT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        server: SandboxAuthorizationServer = self.server
        found = server.store.find_any(token_string, token_type_hint)
        return RevocationTarget(*found) if found else None

    def revoke_token(self, token: RevocationTarget, request: OAuth2Request) -> None:
        server: SandboxAuthorizationServer = self.server
        if token.kind == "refresh_token":
            server.store.revoke_grant(token.record.grant_id)
        else:
            server.store.revoke_access(token.record)


class SandboxOpenIDCode(OpenIDCode):  # type: ignore[misc]
    """ID tokens for ``openid`` requests, signed with the bank's ephemeral ES256 key."""

    def __init__(self, key: ECKey, store: TokenStore, ttl: int) -> None:
        super().__init__(require_nonce=False)
        self.key = key
        self.store = store
        self.ttl = ttl

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return self.store.nonce_seen(request.payload.client_id, nonce)

    def resolve_client_private_key(self, client: ClientModel) -> ECKey:
        return self.key

    def get_client_algorithm(self, client: ClientModel) -> str:
        return ID_TOKEN_ALGORITHM

    def get_encode_header(self, client: ClientModel) -> dict[str, str]:
        return {"alg": ID_TOKEN_ALGORITHM, "kid": self.key.kid or ""}

    def get_client_claims(self, client: ClientModel) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": current_issuer(),
            "aud": [client.get_client_id()],
            "iat": now,
            "exp": now + self.ttl,
        }

    def generate_user_info(self, user: str, scope: str) -> UserInfo:
        return UserInfo(sub=user)


class SandboxAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """The authorization server of one sandbox bank; call it with the bank's lock held."""

    def __init__(
        self,
        config: SandboxConfig,
        clients: Sequence[ClientModel],
        store: TokenStore,
        clock: SandboxClock,
        signing_key: ECKey,
    ) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.config = config
        self.clients: dict[str, ClientModel] = {c.get_client_id(): c for c in clients}
        #: Clients made by dynamic registration (RFC 7591), also in :attr:`clients`.
        self.registered: dict[str, ClientModel] = {}
        #: SHA-256 of each registration access token (RFC 7592 §1) -> its client.
        self.registration_tokens: dict[str, RegistrationToken] = {}
        self.store = store
        self.clock = clock
        self.scope_hooks: list[ScopeHook] = []
        self.pushed = PushedRequests(clock, config.par_ttl, config.require_par)
        self.pushed.register(self)
        ttl = config.access_token_ttl
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                lambda **_: secrets.token_urlsafe(32),
                lambda **_: secrets.token_urlsafe(48),
                lambda client, grant_type: ttl,
            ),
        )
        self.register_client_auth_method(
            "private_key_jwt", PrivateKeyJWT(store, config.client_assertion_max_lifetime)
        )
        self.register_grant(
            AuthorizationCodeGrant,
            [S256CodeChallenge(required=True), SandboxOpenIDCode(signing_key, store, ttl)],
        )
        self.register_grant(RotatingRefreshTokenGrant)
        self.register_endpoint(Revocation(self))
        self.register_endpoint(PushedAuthorizationEndpoint(self, self.pushed))
        self.register_endpoint(SandboxRegistrationEndpoint(self))
        self.register_endpoint(SandboxConfigurationEndpoint(self))

    def client_name(self, client_id: str) -> str:
        """What the bank's pages call a client: its registered name, else its id."""
        client = self.clients.get(client_id)
        name = client.settings.client_name if client is not None else None
        return name or client_id

    def add_client(self, settings: SandboxClient, client_info: dict[str, Any],
                   client_metadata: dict[str, Any]) -> ClientModel:
        """Register (or replace, RFC 7592 §2.2) a dynamically registered client."""
        model = registered_model(settings, client_info, client_metadata)
        self.clients[settings.client_id] = model
        self.registered[settings.client_id] = model
        return model

    def remove_client(self, client_id: str) -> None:
        """RFC 7592 §2.3: the client, its registration token and its grants end."""
        self.clients.pop(client_id, None)
        self.registered.pop(client_id, None)
        self.drop_registration_tokens(client_id)

    def drop_registration_tokens(self, client_id: str) -> None:
        for key in [k for k, t in self.registration_tokens.items() if t.client_id == client_id]:
            del self.registration_tokens[key]

    def registration_uri(self, client_id: str) -> str:
        return f"{current_issuer()}{REGISTER_PATH}/{client_id}"

    def registration_info(self, client_id: str) -> dict[str, str]:
        """A new registration access token and the client's configuration URI."""
        token = secrets.token_urlsafe(32)
        self.registration_tokens[digest(token)] = RegistrationToken(client_id)
        return {"registration_client_uri": self.registration_uri(client_id),
                "registration_access_token": token}

    def validate_requested_scope(self, scope: str | None) -> None:
        """The standard scopes, plus any a registered :class:`ScopeHook` accepts."""
        for item in scope_to_list(scope) or []:
            if item not in SCOPES and not any(h.accepts(item) for h in self.scope_hooks):
                raise InvalidScopeError()

    def scopes_decided(self, scope: str | None, user: str | None) -> None:
        for hook in self.scope_hooks:
            hook.decided(scope_to_list(scope) or [], user)

    def query_client(self, client_id: str) -> ClientModel | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        issued = IssuedTokens(
            client_id=request.client.get_client_id(),
            user=request.user,
            scope=token.get("scope", ""),
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            expires_in=token["expires_in"],
        )
        self.store.save_tokens(issued, request.authorization_code, request.refresh_token)

    def create_oauth2_request(self, request: object) -> SandboxOAuth2Request:
        if not isinstance(request, SandboxOAuth2Request):
            raise TypeError("parse the request with read_oauth2_request() first")
        return request

    def create_json_request(self, request: object) -> JsonRequest:
        if not isinstance(request, JsonRequest):
            raise TypeError("parse the request with read_json_request() first")
        return request

    def handle_response(
        self, status: int, body: object, headers: Sequence[tuple[str, str]]
    ) -> Response:
        header_map = dict(headers)
        if status in (302, 303) and "Location" in header_map:
            # RFC 9207 §2: success and error alike. Only authorization responses redirect.
            location = header_map["Location"]
            header_map["Location"] = add_params_to_uri(location, [("iss", current_issuer())])
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers=header_map)
        return Response(body if isinstance(body, str | bytes) else None, status, header_map)

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        # No subscribers; log the event name only (the payloads carry credentials).
        log.debug("sandbox oauth signal %s", name)
