"""Berlin Group NextGenPSD2 XS2A account-information consents (Implementation Guidelines v1.3.x).

:class:`BerlinGroupConsents` is the :class:`~connectors.consents.base.ConsentManager` of a
profile with ``standard = "berlin_group"``:

- ``create``: ``POST /v1/consents`` ("Establish Account Information Consent") with the
  profile's ``access``, ``recurringIndicator: true``, ``validUntil`` from the consent
  period, ``frequencyPerDay`` equal to the profile's ``[sync] daily_budget`` and
  ``combinedServiceIndicator: false``; headers ``X-Request-ID``, ``PSU-IP-Address`` (the
  user is at the Link page), ``TPP-Redirect-Preferred: true`` and, for the redirect
  approach, ``TPP-Redirect-URI`` (the gateway's callback, carrying the link's ``state``).
  The answer's ``_links`` must offer the profile's approach: ``scaOAuth`` (then the OAuth
  request carries ``scope=AIS:{consentId}``) or ``scaRedirect`` (the bank's page
  replaces the OAuth request);
- ``confirm``: ``GET /v1/consents/{id}/status`` must say ``valid``; ``received`` is read
  again a bounded number of times (a bank may finish SCA after the redirect); then
  ``GET /v1/consents/{id}`` for ``validUntil``, the connection's ``consent_expires_at``;
- ``resource_headers``: ``Consent-ID``, and ``PSU-IP-Address`` only when the user is
  present: its absence is what makes a call count against ``frequencyPerDay``;
- ``revoke``: ``DELETE /v1/consents/{id}``; a consent the bank no longer knows is gone.

Errors come from ``tppMessages`` ("Additional Error Information"): ``CONSENT_EXPIRED``,
``CONSENT_UNKNOWN`` → :class:`~connectors.errors.ConsentInvalid`; ``ACCESS_EXCEEDED``
(429) → :class:`AccessExceeded` with the bank's reset time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx

from connectors._schema import url_problem
from connectors.consents.base import (
    ConsentRequest,
    ConsentState,
    CreatedConsent,
    GrantedConsent,
    Standard,
    UserPresence,
)
from connectors.consents.berlin_options import BerlinAccess, BerlinGroupOptions, ScaApproach
from connectors.dialects.base import map_httpx_errors
from connectors.dialects.berlin_errors import raise_for_tpp_messages
from connectors.errors import BankProtocolError, BankUnsupported, ConsentInvalid
from connectors.profiles import BankProfile

__all__ = ["BerlinGroupConsents", "consent_status"]

log = logging.getLogger("connectors.consents.berlin_group")

#: ``consentStatus`` values (Implementation Guidelines v1.3.x, "Consent Status").
_STATES: Mapping[str, ConsentState] = {
    "received": ConsentState.AWAITING,
    "partiallyAuthorised": ConsentState.AWAITING,
    "valid": ConsentState.AUTHORISED,
    "rejected": ConsentState.REJECTED,
    "revokedByPsu": ConsentState.REVOKED,
    "terminatedByTpp": ConsentState.REVOKED,
    "expired": ConsentState.EXPIRED,
}


def consent_status(raw: object) -> ConsentState:
    """Map a ``consentStatus`` value; an unknown word is a protocol error."""
    state = _STATES.get(raw) if isinstance(raw, str) else None
    if state is None:
        raise BankProtocolError(f"unknown consentStatus {str(raw)[:32]!r}")
    return state


class BerlinGroupConsents:
    """The consent lifecycle at one Berlin Group bank; see the module docstring.

    Built by :func:`connectors.consents.consent_manager` with the bank's profile, its
    OAuth client (unused by the redirect approach) and the HTTP client that presents the
    bank's QWAC (the profile's ``tls_client_cert_file``). Example::

        manager = BerlinGroupConsents(profile, oauth, http)
        created = await manager.create(ConsentRequest(callback_url, state,
                                                      presence=UserPresence(ip)))
        url = created.redirect_url          # redirect approach: send the user there
        granted = await manager.confirm(created)
        headers = manager.resource_headers(granted.id, None)   # unattended
    """

    standard: ClassVar[Standard] = Standard.BERLIN_GROUP

    def __init__(self, profile: BankProfile, oauth: object, http: httpx.AsyncClient,
                 *, sleep: Any = asyncio.sleep) -> None:
        options = getattr(profile, "berlin_group", None)
        if not isinstance(options, BerlinGroupOptions):
            raise BankUnsupported(f"{profile.id}: the profile has no [berlin_group] options")
        self._profile = profile
        self._options = options
        self._http = http
        self._sleep = sleep
        self._issuer = profile.issuer

    def __repr__(self) -> str:
        return f"BerlinGroupConsents(bank={self._profile.id!r})"

    # -- ConsentManager ------------------------------------------------------------------

    async def create(self, request: ConsentRequest) -> CreatedConsent:
        valid_until = request.valid_until or (datetime.now(UTC) + timedelta(days=180))
        # Two-step, first step: one-off and list-only ("Consent Request on Account List
        # of Available Accounts": recurringIndicator false, frequencyPerDay 1).
        listing = self._options.access is BerlinAccess.TWO_STEP and not request.account_ids
        body = {
            "access": self._access(request.account_ids),
            "recurringIndicator": not listing,
            "validUntil": valid_until.astimezone(UTC).date().isoformat(),
            "frequencyPerDay": 1 if listing else self._profile.sync.daily_budget,
            "combinedServiceIndicator": False,
        }
        headers = {"TPP-Redirect-Preferred": "true"}
        if request.presence.ip_address:
            headers["PSU-IP-Address"] = request.presence.ip_address
        redirect = self._options.sca_approach is ScaApproach.REDIRECT
        if redirect:
            # The bank returns the browser to this URI exactly: it must name the link.
            headers["TPP-Redirect-URI"] = _with_state(request.callback_url, request.state)
        response, rid = await self._call("POST", self._options.consents_url, body, headers)
        answer = _object(response, "POST consents")
        consent_id = answer.get("consentId")
        if not isinstance(consent_id, str) or not consent_id or len(consent_id) > 255:
            raise BankProtocolError("POST consents: no consentId in the answer")
        state = consent_status(answer.get("consentStatus", "received"))
        links = answer.get("_links") if isinstance(answer.get("_links"), dict) else {}
        assert isinstance(links, dict)
        href = _href(links, "scaRedirect" if redirect else "scaOAuth")
        if href is None:
            offered = sorted(k for k in links if k.startswith(("sca", "start")))
            raise BankUnsupported(
                f"{self._profile.id}: consent answer offers {offered}, not the profile's "
                f"sca_approach {self._options.sca_approach.value!r}")
        problem = url_problem(href)
        if problem:
            raise BankProtocolError(f"POST consents: SCA link refused: {problem}")
        if not redirect and _origin(href) != _origin(self._issuer):
            # The OAuth flow runs against the profile's issuer; a consent that names
            # another authorization server would be authorised where we never look.
            raise BankProtocolError("POST consents: scaOAuth names another server than "
                                    "the profile's issuer")
        data = {"request_id": rid, **({"step": "list"} if listing else {})}
        return CreatedConsent(id=consent_id, state=state,
                              redirect_url=href if redirect else None, data=data)

    async def authorization_params(
        self, created: CreatedConsent, params: Mapping[str, str]
    ) -> dict[str, str]:
        """OAuth2 SCA approach: the scope names the consent (``AIS:{consentId}``)."""
        out = dict(params)
        scopes = [s for s in out.get("scope", "").split() if not s.startswith("AIS:")]
        out["scope"] = " ".join([*scopes, f"AIS:{created.id}"])
        return out

    async def confirm(self, created: CreatedConsent) -> GrantedConsent:
        attempts = self._options.status_poll_attempts
        for attempt in range(attempts):
            state = await self.status(created.id)
            if state is ConsentState.AUTHORISED:
                break
            if state.dead:
                raise ConsentInvalid(f"{self._profile.id}: the consent is {state.value}",
                                     state.value)
            if attempt + 1 < attempts:
                await self._sleep(self._options.status_poll_interval)
        else:
            raise BankProtocolError(
                f"{self._profile.id}: the consent is still awaiting authorisation after "
                f"{attempts} status reads")
        details, _ = await self._call("GET", self._consent_url(created.id))
        self._check_frequency(details)
        return GrantedConsent(id=created.id, expires_at=self._expiry(details))

    async def status(self, consent_id: str) -> ConsentState:
        try:
            response, _ = await self._call("GET", self._consent_url(consent_id, "status"))
        except ConsentInvalid as dead:
            return ConsentState(dead.state)
        return consent_status(_object(response, "GET consent status").get("consentStatus"))

    def resource_headers(
        self, consent_id: str, presence: UserPresence | None
    ) -> dict[str, str]:
        headers = {"Consent-ID": consent_id}
        if presence is not None and presence.ip_address:
            headers["PSU-IP-Address"] = presence.ip_address
        return headers

    async def revoke(self, consent_id: str) -> None:
        try:
            await self._call("DELETE", self._consent_url(consent_id))
        except ConsentInvalid:
            return  # unknown or expired already: nothing left to delete

    # -- helpers -------------------------------------------------------------------------

    def _access(self, account_ids: tuple[str, ...]) -> dict[str, Any]:
        if account_ids:  # the detailed consent of a two-step link: the IBANs picked
            refs = [{"iban": iban} for iban in account_ids]
            return {"accounts": refs, "balances": refs, "transactions": refs}
        access = self._options.access
        if access in (BerlinAccess.AVAILABLE_ACCOUNTS, BerlinAccess.TWO_STEP):
            return {"availableAccounts": "allAccounts"}
        if access is BerlinAccess.BANK_OFFERED:
            return {"accounts": [], "balances": [], "transactions": []}
        return {"allPsd2": "allAccounts"}

    def _consent_url(self, consent_id: str, *rest: str) -> str:
        return "/".join([self._options.consents_url.rstrip("/"), quote(consent_id, safe=""),
                         *rest])

    def _check_frequency(self, response: httpx.Response) -> None:
        # A bank may grant fewer unattended reads than asked; the ledger would then spend
        # more than the bank allows and meet 429 ACCESS_EXCEEDED (handled, but late).
        granted = _object(response, "GET consent").get("frequencyPerDay")
        budget = self._profile.sync.daily_budget
        if isinstance(granted, int) and not isinstance(granted, bool) and 0 < granted < budget:
            log.warning("bank %s granted frequencyPerDay %d below [sync] daily_budget %d; "
                        "lower the profile's daily_budget", self._profile.id, granted, budget)

    def _expiry(self, response: httpx.Response) -> datetime | None:
        raw = _object(response, "GET consent").get("validUntil")
        if not isinstance(raw, str):
            return None
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise BankProtocolError("GET consent: validUntil is not an ISO date") from None
        # validUntil is the last day the consent may be used: it ends at that day's end.
        return datetime.combine(day + timedelta(days=1), time(), UTC)

    async def _call(self, method: str, url: str, body: object = None,
                    headers: Mapping[str, str] | None = None) -> tuple[httpx.Response, str]:
        rid = str(uuid.uuid4())
        sent = {"Accept": "application/json", "X-Request-ID": rid, **(headers or {})}
        path = httpx.URL(url).path
        with map_httpx_errors(f"{method} {path}"):
            response = await self._http.request(
                method, url, json=body, headers=sent, follow_redirects=False)
        where = f"{method} {path}: HTTP {response.status_code} (X-Request-ID {rid})"
        log.debug("berlin_group %s", where)
        raise_for_tpp_messages(response, where)
        return response, rid


def _object(response: httpx.Response, where: str) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        raise BankProtocolError(f"{where}: body is not JSON") from None
    if not isinstance(body, dict):
        raise BankProtocolError(f"{where}: body is not a JSON object")
    return body


def _href(links: Mapping[str, Any], name: str) -> str | None:
    link = links.get(name)
    href = link.get("href") if isinstance(link, dict) else None
    return href if isinstance(href, str) and href else None


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _with_state(callback_url: str, state: str) -> str:
    parts = urlsplit(callback_url)
    query = "&".join(q for q in (parts.query, urlencode({"state": state})) if q)
    return urlunsplit(parts._replace(query=query))
