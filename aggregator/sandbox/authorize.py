"""The authorization endpoint and the sign-in and consent steps behind it.

``GET /authorize`` validates the request (PAR resolution, client, redirect URI, PKCE)
and shows the sign-in form; ``POST /login`` checks a test user and shows the consent
form; ``POST /consent`` answers the client through a redirect that always carries
``iss``. Between the steps the validated parameters wait in an *interaction*
named by an unguessable, single-use, expiring id sent back in a hidden field; that id is
also what stops a forged cross-site form post from completing someone else's flow.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from authlib.oauth2.rfc6749 import InsecureTransportError, OAuth2Error, scope_to_list
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from aggregator.sandbox.authorization_server import SandboxAuthorizationServer
from aggregator.sandbox.config import TEST_USERS, Faults
from aggregator.sandbox.discovery import CONSENT_PATH, LOGIN_PATH
from aggregator.sandbox.pages import consent_page, error_page, login_page
from aggregator.sandbox.requests import SandboxOAuth2Request, read_oauth2_request
from aggregator.sandbox.store import SandboxClock


@dataclass
class Interaction:
    interaction_id: str
    params: list[tuple[str, str]]
    client_id: str
    expires_at: float
    user: str | None = None


class Interactions:
    def __init__(self, clock: SandboxClock, ttl: int) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Interaction] = {}
        self.clock = clock
        self.ttl = ttl

    def create(self, params: list[tuple[str, str]], client_id: str) -> Interaction:
        now = self.clock.now()
        interaction = Interaction(secrets.token_urlsafe(24), params, client_id, now + self.ttl)
        with self._lock:
            for key in [k for k, i in self._items.items() if i.expires_at <= now]:
                del self._items[key]
            self._items[interaction.interaction_id] = interaction
        return interaction

    def get(self, interaction_id: str) -> Interaction | None:
        with self._lock:
            found = self._items.get(interaction_id)
        return found if found and found.expires_at > self.clock.now() else None

    def pop(self, interaction_id: str) -> Interaction | None:
        with self._lock:
            found = self._items.pop(interaction_id, None)
        return found if found and found.expires_at > self.clock.now() else None


def check_password(username: str, password: str) -> bool:
    expected = TEST_USERS.get(username)
    # Compare against something even for unknown users: no user-enumeration timing.
    ok = secrets.compare_digest((expected or "\0").encode(), password.encode())
    return ok and expected is not None


_EXPIRED = "This sign-in has expired or was already used. Start again from your app."


class AuthorizeViews:
    """Request handlers; each one touches authlib only with the bank's lock held."""

    def __init__(
        self,
        server: SandboxAuthorizationServer,
        interactions: Interactions,
        faults: Callable[[], Faults],
    ) -> None:
        self.server = server
        self.interactions = interactions
        self.faults = faults

    async def authorize(self, request: Request) -> Response:
        try:
            oauth_request = await read_oauth2_request(request)
        except InsecureTransportError:
            return error_page("Insecure request", "Use https or a loopback address.")
        return self.begin(oauth_request)

    def begin(self, oauth_request: SandboxOAuth2Request) -> Response:
        """Validate a parsed authorization request and show the sign-in form."""
        with self.server.store.lock:
            response = self._validate(oauth_request)
            if response is not None:
                return response
            if self.faults().deny_consent:
                return self._answer(oauth_request, None)
            params = list(oauth_request.payload.data.items())
            interaction = self.interactions.create(params, oauth_request.payload.client_id)
        return login_page(LOGIN_PATH, interaction.interaction_id,
                          self.server.client_name(interaction.client_id))

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        interaction = self.interactions.get(form.get("interaction", ""))
        if interaction is None:
            return error_page("Sign-in expired", _EXPIRED)
        username = form.get("username", "")
        if not check_password(username, form.get("password", "")):
            return login_page(
                LOGIN_PATH,
                interaction.interaction_id,
                self.server.client_name(interaction.client_id),
                error="Unknown username or wrong password.",
            )
        interaction.user = username
        # The consent form is the answer to the sign-in POST (no redirect): the
        # interaction id then never appears in a URL, so never in an access log.
        scope = dict(interaction.params).get("scope") or "accounts"
        return consent_page(
            CONSENT_PATH,
            interaction.interaction_id,
            self.server.client_name(interaction.client_id),
            username,
            scope_to_list(scope),
        )

    async def consent(self, request: Request) -> Response:
        form = await _form(request)
        interaction = self.interactions.pop(form.get("interaction", ""))
        if interaction is None or interaction.user is None:
            return error_page("Sign-in expired", _EXPIRED)
        approved = form.get("decision") == "approve"
        user = interaction.user if approved else None
        oauth_request = SandboxOAuth2Request(
            "GET", str(request.url), {}, interaction.params, pushed=True
        )
        with self.server.store.lock:
            response = self._validate(oauth_request, user)
            if response is None and not approved:
                self.server.scopes_decided(dict(interaction.params).get("scope"), None)
            return response if response is not None else self._answer(oauth_request, user)

    def _validate(
        self, oauth_request: SandboxOAuth2Request, user: str | None = None
    ) -> Response | None:
        try:
            self.server.get_consent_grant(oauth_request, end_user=user)
        except OAuth2Error as error:
            if error.redirect_uri:
                response: Response = self.server.handle_error_response(oauth_request, error)
                return response
            return error_page("Request refused", f"{error.error}: {error.description or ''}")
        return None

    def _answer(self, oauth_request: SandboxOAuth2Request, user: str | None) -> Response:
        grant = self.server.get_authorization_grant(oauth_request)
        response: Response = self.server.create_authorization_response(
            oauth_request, grant_user=user, grant=grant
        )
        return response


async def _form(request: Request) -> dict[str, str]:
    async with request.form() as form:
        return {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
