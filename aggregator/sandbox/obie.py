"""The sandbox bank's ``sandbox-obie`` mode: a UK Open Banking (v3.1) bank.

Everything the plain sandbox does, plus what the OBIE Read/Write API v3.1 and the OBIE
Security Profile ask of a bank before it serves account data:

- the client-credentials grant (scope ``accounts``), whose tokens manage consents only
  (:mod:`aggregator.sandbox.obie_consents`);
- the authorization request only as a signed request object (RFC 9101), pushed or not,
  verified against the client's registered key (:mod:`aggregator.sandbox.rfc9101`), whose
  ``claims.id_token.openbanking_intent_id`` must name an ``AwaitingAuthorisation``
  consent of that client;
- a consent page listing the consent's permissions and the user's accounts, each one a
  checkbox: the user authorises (or rejects) the consent for the accounts they pick;
- tokens bound to that consent: the account API serves only its accounts and its
  permissions (``ReadAccountsBasic`` hides identifiers, ``ReadBalances``, the
  transaction permissions and their credits/debits split), answers ``403`` once the
  consent is revoked or expired, and a refresh then fails with ``invalid_grant``;
- ``response_type = "code id_token"`` behind the client's switch (FAPI 1 Advanced
  hybrid flow): an ES256 ID token beside the code with ``c_hash``, ``s_hash``, ``nonce``
  and ``openbanking_intent_id``, answered by form post (``response_mode=form_post``)
  with ``iss`` (RFC 9207) and a no-script button;
- ``POST /_sandbox/consents/{ConsentId}/revoke`` (loopback only): the user revokes the
  consent at the bank, as from their banking app's consent dashboard.

Example::

    bank = ObieSandboxBank(SandboxConfig(clients=[obie_client(public_jwk)]))
    async with bank.serve() as issuer:
        ...
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error, grants
from joserfc.jwk import ECKey
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aggregator.sandbox.aisp import AISP_PREFIX, AccountViews
from aggregator.sandbox.authorization_server import (
    AuthorizationCodeGrant,
    RotatingRefreshTokenGrant,
    S256CodeChallenge,
    SandboxAuthorizationServer,
)
from aggregator.sandbox.authorize import AuthorizeViews, Interactions, _form, check_password
from aggregator.sandbox.bank import SandboxBank
from aggregator.sandbox.config import (
    CLIENT_AUTH_METHODS,
    DEV_REDIRECT_URIS,
    SandboxClient,
    SandboxConfig,
)
from aggregator.sandbox.discovery import (
    CONSENT_PATH,
    LOGIN_PATH,
    server_metadata,
)
from aggregator.sandbox.ledger import Account
from aggregator.sandbox.middleware import FapiInteractionId, LoopbackOnly, current_issuer
from aggregator.sandbox.models import ClientModel, TokenRecord, load_public_keys
from aggregator.sandbox.obie_aisp import ObieAccountViews
from aggregator.sandbox.obie_consents import (
    ACR_VALUES,
    AccessConsent,
    ConsentStore,
    ConsentViews,
    intent_of,
)
from aggregator.sandbox.obie_hybrid import ObieHybridGrant
from aggregator.sandbox.pages import _page, error_page, login_page
from aggregator.sandbox.requests import SandboxOAuth2Request, read_oauth2_request
from aggregator.sandbox.rfc9101 import InvalidRequestObjectError, unpack
from aggregator.sandbox.rfc9126 import PushedAuthorizationEndpoint
from aggregator.sandbox.store import TokenStore
from aggregator.sandbox_keys import sandbox_signer

__all__ = ["OBIE_CLIENT_ID", "ObieSandboxBank", "dev_obie_client", "obie_client"]

log = logging.getLogger(__name__)

#: The sandbox OBIE mode's development client (``connectors/banks/sandbox-obie.toml``).
OBIE_CLIENT_ID = "sandbox-obie-client"
#: Its generated key, as the profile names it (``dev_private_key``, ``client_key_id``).
DEV_KEY_NAME, DEV_KEY_ID, DEV_SIGNING_ALG = "sandbox-obie-client", "sandbox-obie-dev", "PS256"

for _name in ("client_credentials",):
    # authlib logs whole token responses at DEBUG ("Issue token %r"); dropped like the
    # other grants' (aggregator/sandbox/authorization_server.py).
    logging.getLogger(f"authlib.oauth2.rfc6749.grants.{_name}").addFilter(
        lambda record: not str(record.msg).startswith("Issue token"))


def obie_client(jwks: Mapping[str, Any] | str, *, client_id: str = OBIE_CLIENT_ID,
                redirect_uris: Sequence[str] = DEV_REDIRECT_URIS) -> SandboxClient:
    """A TPP registered at the OBIE sandbox: ``private_key_jwt`` with its public key."""
    return SandboxClient(client_id=client_id, redirect_uris=redirect_uris,
                         auth_methods=("private_key_jwt",), jwks=jwks)


def dev_obie_client(
    data_dir: Path, redirect_uris: Sequence[str] = DEV_REDIRECT_URIS
) -> SandboxClient:
    """The development client of ``connectors/banks/sandbox-obie.toml``, with the public
    half of the key generated (if need be) in the gateway's data directory ``data_dir``
    (:mod:`aggregator.sandbox_keys`)."""
    signer = sandbox_signer(data_dir, DEV_KEY_NAME, DEV_SIGNING_ALG, key_id=DEV_KEY_ID)
    return obie_client({"keys": [signer.public_jwk()]}, redirect_uris=redirect_uris)


class ObieClientModel(ClientModel):
    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token", "client_credentials")

    def check_response_type(self, response_type: str) -> bool:
        return response_type in ("code", "code id_token")


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)


class ObieCodeGrant(AuthorizationCodeGrant):
    def save_authorization_code(self, code: str, request: SandboxOAuth2Request) -> None:
        super().save_authorization_code(code, request)
        intent = intent_of(request.payload.data)
        if intent is not None:
            self.server.consents.bind_code(code, intent)


class ObieRefreshGrant(RotatingRefreshTokenGrant):
    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        record = super().authenticate_refresh_token(refresh_token)
        if record is None:
            return None
        consents: ConsentStore = self.server.consents
        consent = consents.for_grant(record.grant_id)
        # OBIE: a revoked or expired consent ends its refresh tokens (invalid_grant).
        return record if consent is not None and consent.usable(consents.now()) else None


class ObiePushedEndpoint(PushedAuthorizationEndpoint):
    """PAR that takes only a signed request object (RFC 9126 §3) and stores its claims."""

    def _validate(self, pushed: SandboxOAuth2Request) -> None:
        data = pushed.payload.data
        client = self.server.query_client(data.get("client_id", ""))
        params = checked_request_object(self.server.consents, client, data)
        pushed.payload = type(pushed.payload)(params.items())
        super()._validate(pushed)


def checked_request_object(
    consents: ConsentStore, client: ClientModel | None, outer: Mapping[str, str]
) -> dict[str, str]:
    """The verified request object's parameters; its intent must await this client."""
    if client is None:
        raise InvalidRequestObjectError(description="Unknown client.")
    params = unpack(client, outer, current_issuer(),
                    consents.request_object_keys.get(client.get_client_id()))
    consent = consents.get(intent_of(params) or "")
    if consent is None or consent.client_id != client.get_client_id():
        raise InvalidRequestObjectError(description="openbanking_intent_id names no consent "
                                                    "of this client.")
    if consent.status != "AwaitingAuthorisation":
        raise InvalidRequestObjectError(description="The consent is not awaiting "
                                                    "authorisation.")
    return params


class ObieAuthorizationServer(SandboxAuthorizationServer):
    """The sandbox's server with client credentials, JAR-only PAR and consent binding."""

    def __init__(self, config: SandboxConfig, clients: Sequence[ClientModel],
                 store: TokenStore, clock: Any, signing_key: ECKey,
                 consents: ConsentStore) -> None:
        self.consents = consents
        self.signing_key = signing_key
        super().__init__(config, clients, store, clock, signing_key)
        swap: dict[type, type] = {AuthorizationCodeGrant: ObieCodeGrant,
                                  RotatingRefreshTokenGrant: ObieRefreshGrant}
        for name in ("_authorization_grants", "_token_grants"):  # authlib's registries
            registered: list[tuple[type, Any]] = getattr(self, name)
            setattr(self, name, [(swap.get(g, g), e) for g, e in registered])
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(ObieHybridGrant, [S256CodeChallenge(required=True)])
        self._endpoints["pushed_authorization_request"] = [
            ObiePushedEndpoint(self, self.pushed)]

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        if request.payload.data.get("grant_type") == "client_credentials":
            self.consents.save_client_token(
                token["access_token"], request.client.get_client_id(),
                token.get("scope", ""), int(token["expires_in"]))
            return
        super().save_token(token, request)
        code = request.authorization_code
        if code is not None and code.grant_id:
            self.consents.bind_grant(code.code_hash, code.grant_id)


class ObieAuthorizeViews(AuthorizeViews):
    """Request objects only; the consent page lists permissions and the user's accounts."""

    def __init__(self, server: ObieAuthorizationServer, interactions: Interactions,
                 faults: Any, accounts: Any) -> None:
        super().__init__(server, interactions, faults)
        self.obie = server
        self.accounts_of = accounts

    async def authorize(self, request: Request) -> Response:
        oauth_request = await read_oauth2_request(request)
        data = oauth_request.payload.data
        if "request_uri" not in data:
            try:
                params = checked_request_object(
                    self.obie.consents, self.obie.query_client(data.get("client_id", "")), data)
            except OAuth2Error as error:
                # The redirect URI is not trusted yet: say it here (RFC 9101 §6.3).
                return error_page("Request refused", f"{error.error}: {error.description}")
            oauth_request = SandboxOAuth2Request("GET", str(request.url), {},
                                                 list(params.items()))
        return self.begin(oauth_request)

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        interaction = self.interactions.get(form.get("interaction", ""))
        if interaction is None:
            return error_page("Sign-in expired", "This sign-in has expired or was already "
                              "used. Start again from your app.")
        username = form.get("username", "")
        if not check_password(username, form.get("password", "")):
            return login_page(LOGIN_PATH, interaction.interaction_id, interaction.client_id,
                              error="Unknown username or wrong password.")
        consent = self.obie.consents.get(intent_of(dict(interaction.params)) or "")
        if consent is None:
            return error_page("Request refused", "The consent is gone.")
        interaction.user = username
        return consent_page(interaction.interaction_id, interaction.client_id, username,
                            consent, self.accounts_of(username))

    async def consent(self, request: Request) -> Response:
        form = await _form(request)
        interaction = self.interactions.pop(form.get("interaction", ""))
        if interaction is None or interaction.user is None:
            return error_page("Sign-in expired", "This sign-in has expired or was already "
                              "used. Start again from your app.")
        owned = {a.account_id for a in self.accounts_of(interaction.user)}
        picked = tuple(sorted(key.removeprefix("account_") for key in form
                              if key.startswith("account_") and key[8:] in owned))
        approved = form.get("decision") == "approve" and bool(picked)
        user = interaction.user if approved else None
        intent = intent_of(dict(interaction.params))
        if intent is not None:
            self.obie.consents.decide(intent, user, picked if approved else ())
        oauth_request = SandboxOAuth2Request(
            "GET", str(request.url), {}, interaction.params, pushed=True)
        with self.server.store.lock:
            response = self._validate(oauth_request, user)
            return response if response is not None else self._answer(oauth_request, user)


_PERMISSION_TEXT = {
    "ReadAccountsBasic": "Your account names and types",
    "ReadAccountsDetail": "Your account names, types, numbers and holder names",
    "ReadBalances": "Your balances",
    "ReadTransactionsBasic": "Your transactions (amounts and dates)",
    "ReadTransactionsDetail": "Your transactions, with descriptions and counterparties",
    "ReadTransactionsCredits": "Money coming in",
    "ReadTransactionsDebits": "Money going out",
}


def consent_page(interaction_id: str, client_id: str, user: str, consent: AccessConsent,
                 accounts: Sequence[Account]) -> Response:
    items = "".join(f"<li>{escape(_PERMISSION_TEXT.get(p, p))} (<code>{escape(p)}</code>)"
                    "</li>" for p in consent.permissions)
    boxes = "".join(
        f'<label><input type="checkbox" name="account_{escape(a.account_id)}" value="on" '
        f'checked> {escape(a.nickname)} ({escape(a.sub_type)}, {escape(a.currency)})</label>\n'
        for a in accounts)
    until = (f"<p>Until {escape(consent.expires_at.date().isoformat())}.</p>\n"
             if consent.expires_at else "")
    body = (
        f"<p>Signed in as <strong>{escape(user)}</strong>.</p>\n"
        f"<p><strong>{escape(client_id)}</strong> asks to see:</p>\n<ul>{items}</ul>\n{until}"
        f'<form method="post" action="{escape(CONSENT_PATH)}">\n'
        f'<input type="hidden" name="interaction" value="{escape(interaction_id)}">\n'
        f"<fieldset><legend>Share these accounts</legend>\n{boxes}</fieldset>\n"
        '<button type="submit" name="decision" value="approve">Allow</button>\n'
        '<button type="submit" name="decision" value="deny">Deny</button>\n</form>'
    )
    return _page("Allow access?", body)


class ObieSandboxBank(SandboxBank):
    """The sandbox bank in its UK Open Banking mode (see the module docstring).

    ``request_object_keys`` (client id → JWK set) makes the bank verify that client's
    request objects with other keys than its registered ones: a TPP whose request-object
    key the bank does not know, so every request object it signs is refused.
    """

    consents: ConsentStore

    def __init__(self, config: SandboxConfig | None = None, *,
                 request_object_keys: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._request_object_keys = dict(request_object_keys or {})
        super().__init__(config)

    def revoke_consent(self, consent_id: str) -> bool:
        """The user revokes the consent at the bank (their consent dashboard)."""
        return self.consents.revoke(consent_id)

    def _create_server(self, signing_key: ECKey) -> SandboxAuthorizationServer:
        self.consents = ConsentStore(self.clock)
        self.consents.request_object_keys = {
            client_id: load_public_keys(client_id, jwks)
            for client_id, jwks in self._request_object_keys.items()}
        return ObieAuthorizationServer(
            self.config, [ObieClientModel(c) for c in self.config.clients], self.store,
            self.clock, signing_key, self.consents)

    def _authorize_views(self, interactions: Interactions) -> AuthorizeViews:
        server = self.server
        assert isinstance(server, ObieAuthorizationServer)
        return ObieAuthorizeViews(server, interactions, lambda: self.faults,
                                  self.ledger.accounts_of)

    def _account_views(self) -> AccountViews:
        return ObieAccountViews(self.store, self.ledger, self.config.page_size, self.consents)

    def _routes(self, signing_key: ECKey) -> list[BaseRoute]:
        views = ConsentViews(self.consents)
        interaction = [Middleware(FapiInteractionId)]
        consent_routes: list[BaseRoute] = [
            Route(AISP_PREFIX + route.path, route.endpoint, methods=route.methods,
                  middleware=interaction)
            for route in views.routes()
        ]
        return [
            Route("/.well-known/oauth-authorization-server", self._metadata, methods=["GET"]),
            Route("/.well-known/openid-configuration", self._metadata, methods=["GET"]),
            *consent_routes,
            Route("/_sandbox/consents/{consent_id}/revoke", self._revoke, methods=["POST"],
                  middleware=[Middleware(LoopbackOnly)]),
            *super()._routes(signing_key),
        ]

    async def _metadata(self, request: Request) -> Response:
        metadata = server_metadata(current_issuer(), self.config)
        metadata.update({
            "grant_types_supported": ["authorization_code", "refresh_token",
                                      "client_credentials"],
            "response_types_supported": ["code", "code id_token"],
            "response_modes_supported": ["query", "form_post"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "request_parameter_supported": True,
            "request_uri_parameter_supported": False,
            "require_signed_request_object": True,
            "request_object_signing_alg_values_supported": ["PS256", "ES256"],
            "claims_parameter_supported": True,
            "acr_values_supported": list(ACR_VALUES),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce",
                                 "acr", "openbanking_intent_id"],
        })
        return JSONResponse(metadata)

    async def _revoke(self, request: Request) -> Response:
        found = self.revoke_consent(request.path_params["consent_id"])
        return Response(status_code=204 if found else 404)
