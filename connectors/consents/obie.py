"""UK Open Banking account-access consents: the :class:`ConsentManager` for ``"obie"``.

Follows the OBIE Read/Write API v3.1 Account and Transaction API ("Account Access
Consents") and the OBIE Security Profile (FAPI 1 Advanced):

- the client's own token: client credentials, scope ``accounts``, with the profile's
  client authentication (``private_key_jwt`` or ``tls_client_auth``), cached until
  shortly before it expires;
- ``POST /account-access-consents`` with ``Permissions``, ``ExpirationDateTime`` (the
  consent period) and ``TransactionFromDateTime``; the answer's ``Status`` must be
  ``AwaitingAuthorisation``;
- the authorization request is a signed request object (RFC 9101) whose
  ``claims.id_token.openbanking_intent_id`` names the consent, ``essential``; the
  profile's ``acr_values`` are asked for the same way (OIDC Core §5.5.1.1);
- after the callback ``GET /account-access-consents/{ConsentId}`` must say
  ``Authorised``; ``ExpirationDateTime`` is the connection's consent end;
- ``DELETE /account-access-consents/{ConsentId}`` ends it (removal, re-consent, erasure);
- resource calls carry ``x-fapi-auth-date`` and, only with the user present,
  ``x-fapi-customer-ip-address`` (the dialect adds ``x-fapi-interaction-id``).

Every call sends a fresh ``x-fapi-interaction-id``, logged with the method, path and
status only; bodies, tokens and the request object are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from connectors.consents.base import (
    ConsentRequest,
    ConsentState,
    CreatedConsent,
    GrantedConsent,
    Standard,
    UserPresence,
)
from connectors.consents.options import ObieOptions
from connectors.errors import BankProtocolError, ConsentInvalid
from connectors.oauth.boundary import map_bank_errors, raise_for_unavailable
from connectors.oauth.client import BankOAuthClient
from connectors.oauth.rfc9101 import build_request_object
from connectors.oauth.tokens import TokenSet
from connectors.profiles import BankProfile

__all__ = ["INTERACTION_ID", "ObieConsents"]

log = logging.getLogger(__name__)

INTERACTION_ID = "x-fapi-interaction-id"
_STATES = {
    "AwaitingAuthorisation": ConsentState.AWAITING,
    "Authorised": ConsentState.AUTHORISED,
    "Rejected": ConsentState.REJECTED,
    "Revoked": ConsentState.REVOKED,
}
#: A client-credentials token is renewed this long before it expires.
_TOKEN_SKEW = timedelta(seconds=30)
_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class ObieConsents:
    """Account-access consents at one UK bank; safe to share between tasks."""

    standard: ClassVar[Standard] = Standard.OBIE

    def __init__(self, profile: BankProfile, oauth: BankOAuthClient,
                 http: httpx.AsyncClient) -> None:
        if profile.obie is None:
            raise ValueError(f"{profile.id}: standard obie needs its [obie] options")
        if oauth.signer is None:
            raise ValueError(f"{profile.id}: signed request objects need a signing key")
        self._profile = profile
        self._options: ObieOptions = profile.obie
        self._oauth = oauth
        self._http = http
        self._token: TokenSet | None = None
        self._token_lock = asyncio.Lock()

    async def create(self, request: ConsentRequest) -> CreatedConsent:
        now = datetime.now(UTC)
        data: dict[str, Any] = {"Permissions": list(self._options.permissions)}
        if request.valid_until is not None:
            data["ExpirationDateTime"] = _instant(request.valid_until)
        if self._options.transaction_history_days is not None:
            since = now - timedelta(days=self._options.transaction_history_days)
            data["TransactionFromDateTime"] = _instant(since)
        headers = {"Content-Type": "application/json"}
        if request.presence.present and request.presence.ip_address:
            headers["x-fapi-customer-ip-address"] = request.presence.ip_address
        body = {"Data": data, "Risk": {}}
        response = await self._call("POST", self._options.consents_url, headers,
                                    json.dumps(body).encode(), "consent creation")
        if response.status_code != 201:
            raise BankProtocolError(f"{self._profile.id}: consent creation: HTTP "
                                    f"{response.status_code}")
        consent_id, state, _ = _consent(response, self._profile.id)
        if state is not ConsentState.AWAITING:
            raise BankProtocolError(f"{self._profile.id}: a new consent is {state.value}, "
                                    "not AwaitingAuthorisation")
        # The hybrid flow's ID token must name this consent (OBIE Security Profile §5.2.2).
        data = {"id_token.openbanking_intent_id": consent_id} if self._options.hybrid else {}
        return CreatedConsent(id=consent_id, state=state, data=data)

    async def authorization_params(
        self, created: CreatedConsent, params: Mapping[str, str]
    ) -> dict[str, str]:
        # OBIE Security Profile §5.2.2: every parameter inside the signed request object;
        # response_type, client_id and scope repeated outside as OIDC Core §6.1 requires.
        intent = {"value": created.id, "essential": True}
        claims: dict[str, Any] = {"openbanking_intent_id": intent}
        if self._options.acr_values:
            claims["acr"] = {"essential": True, "values": list(self._options.acr_values)}
        inner: dict[str, Any] = dict(params)
        inner["response_type"] = self._options.response_type
        if self._options.hybrid:
            # OIDC Form Post Response Mode: the answer arrives as a POST the gateway
            # reads, not in a fragment only a script could read.
            inner["response_mode"] = "form_post"
        inner["claims"] = {"id_token": claims, "userinfo": {"openbanking_intent_id": intent}}
        metadata = await self._oauth.metadata()
        signer = self._oauth.signer
        assert signer is not None  # checked at construction
        request = await build_request_object(
            signer, inner, client_id=self._profile.client_id, audience=metadata.issuer,
            now=datetime.now(UTC),
        )
        outer: dict[str, str] = {
            key: str(inner[key]) for key in ("response_type", "client_id", "scope") if key in inner
        }
        return {**outer, "request": request}

    async def confirm(self, created: CreatedConsent) -> GrantedConsent:
        state, expires = await self._read(created.id)
        if state is not ConsentState.AUTHORISED:
            raise ConsentInvalid(f"{self._profile.id}: the consent is {state.value} after "
                                 "the user's return", state.value)
        return GrantedConsent(id=created.id, expires_at=expires)

    async def status(self, consent_id: str) -> ConsentState:
        state, _ = await self._read(consent_id)
        return state

    def resource_headers(
        self, consent_id: str, presence: UserPresence | None
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self._options.financial_id:
            headers["x-fapi-financial-id"] = self._options.financial_id
        if presence is not None and presence.auth_date is not None:
            # RFC 7231 §7.1.1.1 IMF-fixdate, as the OBIE headers section requires.
            headers["x-fapi-auth-date"] = format_datetime(presence.auth_date.astimezone(UTC),
                                                          usegmt=True)
        if presence is not None and presence.present and presence.ip_address:
            headers["x-fapi-customer-ip-address"] = presence.ip_address
        return headers

    async def revoke(self, consent_id: str) -> None:
        response = await self._call("DELETE", self._consent_url(consent_id), {}, None,
                                    "consent deletion")
        if response.status_code in (200, 204, 404) or _not_found(response):
            return
        raise BankProtocolError(f"{self._profile.id}: consent deletion: HTTP "
                                f"{response.status_code}")

    async def _read(self, consent_id: str) -> tuple[ConsentState, datetime | None]:
        response = await self._call("GET", self._consent_url(consent_id), {}, None,
                                    "consent status")
        if response.status_code == 404 or _not_found(response):
            return ConsentState.UNKNOWN, None
        if response.status_code != 200:
            raise BankProtocolError(f"{self._profile.id}: consent status: HTTP "
                                    f"{response.status_code}")
        found, state, expires = _consent(response, self._profile.id)
        if found != consent_id:
            raise BankProtocolError(f"{self._profile.id}: consent status names another "
                                    "consent")
        if state is ConsentState.AUTHORISED and expires and expires <= datetime.now(UTC):
            state = ConsentState.EXPIRED
        return state, expires

    def _consent_url(self, consent_id: str) -> str:
        return f"{self._options.consents_url.rstrip('/')}/{quote(consent_id, safe='')}"

    async def _call(self, method: str, url: str, headers: Mapping[str, str],
                    body: bytes | None, operation: str) -> httpx.Response:
        token = await self._client_token()
        interaction = str(uuid.uuid4())
        sent = {**headers, "Accept": "application/json", INTERACTION_ID: interaction,
                "Authorization": f"Bearer {token}"}
        if self._options.financial_id:
            sent["x-fapi-financial-id"] = self._options.financial_id
        with map_bank_errors(self._profile.id, operation):
            response = await self._http.request(method, url, headers=sent, content=body,
                                                timeout=_TIMEOUT, follow_redirects=False)
        log.info("bank %s: %s %s -> %s (%s %s)", self._profile.id, method,
                 httpx.URL(url).path, response.status_code, INTERACTION_ID, interaction)
        raise_for_unavailable(response, self._profile.id, operation)
        if response.status_code == 401:
            self._token = None  # the next call fetches a new one; no retry here
        return response

    async def _client_token(self) -> str:
        async with self._token_lock:
            token = self._token
            now = datetime.now(UTC)
            if token is None or (token.expires_at is not None
                                 and token.expires_at - _TOKEN_SKEW <= now):
                token = await self._oauth.client_credentials("accounts")
                self._token = token
            return token.access_token


def _instant(moment: datetime) -> str:
    # ISODateTime with an offset (OBIE "Common Payload Structure", dates).
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def _not_found(response: httpx.Response) -> bool:
    # Some banks answer an unknown consent with 400 UK.OBIE.Resource.NotFound.
    if response.status_code != 400:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    errors = body.get("Errors") if isinstance(body, dict) else None
    return isinstance(errors, list) and any(
        isinstance(e, dict) and e.get("ErrorCode") == "UK.OBIE.Resource.NotFound"
        for e in errors)


def _consent(response: httpx.Response, bank: str) -> tuple[str, ConsentState, datetime | None]:
    try:
        body = response.json()
        data = body["Data"]
        consent_id = data["ConsentId"]
        status = data["Status"]
    except (ValueError, KeyError, TypeError):
        raise BankProtocolError(f"{bank}: the consent answer lacks Data.ConsentId or "
                                "Data.Status") from None
    if not isinstance(consent_id, str) or not 0 < len(consent_id) <= 128:
        raise BankProtocolError(f"{bank}: Data.ConsentId is not a string of 1-128 chars")
    state = _STATES.get(status) if isinstance(status, str) else None
    if state is None:
        raise BankProtocolError(f"{bank}: unknown consent Status")
    expires = None
    raw = data.get("ExpirationDateTime")
    if raw is not None:
        try:
            expires = datetime.fromisoformat(str(raw))
        except ValueError:
            raise BankProtocolError(f"{bank}: ExpirationDateTime is not ISO 8601") from None
        if expires.tzinfo is None:
            raise BankProtocolError(f"{bank}: ExpirationDateTime has no offset")
    return consent_id, state, expires
