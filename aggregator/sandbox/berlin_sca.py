"""Strong customer authentication for Berlin Group consents: the redirect approach and OAuth.

Redirect approach (Implementation Guidelines v1.3.x, "SCA Approach: Redirect"): the
consent's ``_links.scaRedirect`` opens ``/xs2a/sca/{authorisationId}`` at the bank, where
the user signs in and approves or refuses; the bank then sends the browser to the
``TPP-Redirect-URI`` (or ``TPP-Nok-Redirect-URI`` on refusal) exactly as the TPP gave
it. The TPP learns the outcome by reading the consent status.

OAuth2 approach ("SCA Approach: OAuth2"): :class:`ConsentScopes` plugs into the sandbox's
authorization server so that ``scope=AIS:{consentId}`` names a consent still awaiting
authorisation, and the user's approval (or refusal) at the consent page authorises (or
rejects) that consent.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Sequence

from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from aggregator.sandbox.authorize import check_password
from aggregator.sandbox.berlin import OAUTH, RECEIVED, REDIRECT, BerlinConsents
from aggregator.sandbox.berlin_api import PROVIDERS, SCA_PATH, SCOPE_PREFIX, BerlinViews
from aggregator.sandbox.ledger import Ledger
from aggregator.sandbox.middleware import LoopbackOnly
from aggregator.sandbox.models import ClientModel
from aggregator.sandbox.pages import consent_page, error_page, login_page
from aggregator.sandbox.store import TokenStore

_GONE = "This authorisation has expired or was already used. Start again from your app."


class ConsentScopes:
    """``AIS:{consentId}`` scopes for the authorization server (OAuth2 SCA approach)."""

    def __init__(self, consents: BerlinConsents, ledger: Ledger) -> None:
        self.consents = consents
        self.ledger = ledger

    def accepts(self, scope: str) -> bool:
        """A scope naming an OAuth-approach consent that still awaits authorisation."""
        if not scope.startswith(SCOPE_PREFIX):
            return False
        consent = self.consents.get(scope[len(SCOPE_PREFIX):], self.ledger.today)
        return consent is not None and consent.approach == OAUTH and consent.status == RECEIVED

    def decided(self, scopes: Iterable[str], user: str | None) -> None:
        """The user approved (``user`` set) or refused (``None``) these scopes."""
        for scope in scopes:
            if not self.accepts(scope):
                continue
            consent = self.consents.get(scope[len(SCOPE_PREFIX):], self.ledger.today)
            assert consent is not None  # accepts() found it
            if user is None:
                self.consents.reject(consent)
            else:
                self.consents.authorise(consent, user, self.ledger.accounts_of(user))


class RedirectSca:
    """``/xs2a/sca/{id}`` (sign-in), ``/xs2a/sca/{id}/login`` and ``.../decide``."""

    def __init__(self, consents: BerlinConsents, ledger: Ledger) -> None:
        self.consents = consents
        self.ledger = ledger
        self._lock = threading.Lock()
        self._signed_in: dict[str, tuple[str, str]] = {}  # interaction -> (auth id, user)

    def routes(self) -> list[Route]:
        return [
            Route("/{authorisation_id}", self.start, methods=["GET"]),
            Route("/{authorisation_id}/login", self.login, methods=["POST"]),
            Route("/{authorisation_id}/decide", self.decide, methods=["POST"]),
        ]

    async def start(self, request: Request) -> Response:
        auth_id = request.path_params["authorisation_id"]
        if not self._pending(auth_id):
            return error_page("Authorisation expired", _GONE)
        return login_page(f"{auth_id}/login", auth_id, "your account-information provider")

    async def login(self, request: Request) -> Response:
        auth_id = request.path_params["authorisation_id"]
        form = await _form(request)
        if not self._pending(auth_id) or form.get("interaction") != auth_id:
            return error_page("Authorisation expired", _GONE)
        user = form.get("username", "")
        if not check_password(user, form.get("password", "")):
            return login_page(f"{auth_id}/login", auth_id, "your account-information provider",
                              error="Unknown username or wrong password.")
        interaction = secrets.token_urlsafe(24)
        with self._lock:
            self._signed_in[interaction] = (auth_id, user)
        return consent_page("decide", interaction, "your account-information provider", user,
                            ["accounts", "transactions"])

    async def decide(self, request: Request) -> Response:
        auth_id = request.path_params["authorisation_id"]
        form = await _form(request)
        with self._lock:
            found = self._signed_in.pop(form.get("interaction", ""), None)
        consent = self.consents.by_authorisation(auth_id)
        if found is None or found[0] != auth_id or consent is None \
                or consent.status != RECEIVED or consent.redirect_uri is None:
            return error_page("Authorisation expired", _GONE)
        if form.get("decision") == "approve":
            self.consents.authorise(consent, found[1], self.ledger.accounts_of(found[1]))
            target = consent.redirect_uri
        else:
            self.consents.reject(consent)
            target = consent.nok_redirect_uri or consent.redirect_uri
        return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})

    def _pending(self, auth_id: str) -> bool:
        consent = self.consents.by_authorisation(auth_id)
        return consent is not None and consent.status == RECEIVED


async def _form(request: Request) -> dict[str, str]:
    async with request.form(max_files=0, max_fields=8) as form:
        return {k: v for k, v in form.items() if not isinstance(v, UploadFile)}


def berlin_routes(consents: BerlinConsents, ledger: Ledger, store: TokenStore,
                  clients: Sequence[ClientModel], page_size: int) -> list[BaseRoute]:
    """The XS2A providers (one per SCA approach) and the redirect SCA pages."""
    mounts: list[BaseRoute] = [
        Mount(PROVIDERS[approach], routes=BerlinViews(
            approach, consents, ledger, store, clients, page_size).routes())
        for approach in (OAUTH, REDIRECT)
    ]
    mounts.append(Mount(SCA_PATH, routes=RedirectSca(consents, ledger).routes()))
    mounts.append(Mount("/_sandbox/xs2a", routes=BerlinAdmin(consents).routes(),
                        middleware=[Middleware(LoopbackOnly)]))
    return mounts


class BerlinAdmin:
    """``/_sandbox/xs2a/...`` (loopback peers only): what a test or a person at the
    terminal does to the bank's consents from outside — revoke one as its user would at
    the bank, or switch ``require_signatures`` and ``status_lag``."""

    def __init__(self, consents: BerlinConsents) -> None:
        self.consents = consents

    def routes(self) -> list[Route]:
        return [
            Route("/consents/{consent_id}/revoke", self.revoke, methods=["POST"]),
            Route("/settings", self.settings, methods=["POST"]),
        ]

    async def revoke(self, request: Request) -> Response:
        consent_id = request.path_params["consent_id"]
        if consent_id not in self.consents.all():
            return JSONResponse({"error": "not_found"}, 404)
        self.consents.revoke_by_psu(consent_id)
        return JSONResponse({"consentStatus": "revokedByPsu"})

    async def settings(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or set(body) - {"require_signatures", "status_lag"}:
            return JSONResponse({"error": "invalid_request"}, 400)
        lag, sign = body.get("status_lag", 0), body.get("require_signatures", False)
        if not (isinstance(lag, int) and not isinstance(lag, bool) and 0 <= lag <= 10) \
                or not isinstance(sign, bool):
            return JSONResponse({"error": "invalid_request"}, 400)
        self.consents.status_lag, self.consents.require_signatures = lag, sign
        return JSONResponse({"status_lag": lag, "require_signatures": sign})
