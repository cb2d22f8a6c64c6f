"""The sandbox bank's NextGenPSD2 XS2A account-information interface (v1.3.x).

Served twice, once per SCA approach the sandbox offers, as a bank with two providers:

- ``/xs2a/oauth/v1/...``: the OAuth2 SCA approach. A new consent's ``_links.scaOAuth``
  points at the bank's authorization server metadata; the TPP runs the authorization
  code flow with PKCE and ``scope=AIS:{consentId}`` and sends the bearer token on every
  account call, beside ``Consent-ID``;
- ``/xs2a/redirect/v1/...``: the redirect SCA approach. ``_links.scaRedirect`` is the
  bank's own page (:mod:`aggregator.sandbox.berlin_sca`); the user returns to the
  ``TPP-Redirect-URI``, and the consent itself is the TPP's authority (no token).

Per the Implementation Guidelines: ``X-Request-ID`` (a UUID) on every request, echoed;
``POST /v1/consents`` checks ``access``, ``recurringIndicator``, ``validUntil``,
``frequencyPerDay`` and ``combinedServiceIndicator``; ``GET /v1/consents/{id}`` and
``/status``; ``DELETE`` terminates; every account call checks ``Consent-ID`` and what the
consent covers; reads without ``PSU-IP-Address`` count against ``frequencyPerDay``
(429 ``ACCESS_EXCEEDED``). Errors are ``tppMessages`` ("Additional Error Information").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.sandbox.berlin import (
    BALANCES,
    LIST,
    OAUTH,
    RECEIVED,
    REDIRECT,
    TRANSACTIONS,
    VALID,
    Access,
    AccessError,
    BerlinConsents,
    Consent,
    iban_of,
)
from aggregator.sandbox.ledger import Account, Ledger, Transaction
from aggregator.sandbox.middleware import current_issuer
from aggregator.sandbox.models import ClientModel, redirect_uri_matches
from aggregator.sandbox.store import TokenStore

XS2A_PREFIX = "/xs2a"
SCA_PATH = "/xs2a/sca"
#: The provider path of each SCA approach (``{provider}/v1/...`` in the guidelines).
PROVIDERS = {OAUTH: "/xs2a/oauth", REDIRECT: "/xs2a/redirect"}
#: The ``scope`` value that asks for one consent's authorisation (OAuth SCA approach).
SCOPE_PREFIX = "AIS:"
CURRENCY = "EUR"


def tpp_error(status: int, code: str, text: str, request_id: str | None = None,
              headers: dict[str, str] | None = None) -> JSONResponse:
    """An error as the guidelines' "Additional Error Information" (``tppMessages``)."""
    out = dict(headers or {})
    if request_id:
        out["X-Request-ID"] = request_id
    body = {"tppMessages": [{"category": "ERROR", "code": code, "text": text}]}
    return JSONResponse(body, status_code=status, headers=out)


def _required_request_id(request: Request) -> str | JSONResponse:
    """The request's ``X-Request-ID``, or the ``tppMessages`` answer refusing it."""
    rid = _request_id(request)
    if rid is None:
        return tpp_error(400, "FORMAT_ERROR", "X-Request-ID must be a UUID.")
    return rid


def _request_id(request: Request) -> str | None:
    value = request.headers.get("x-request-id", "")
    try:
        uuid.UUID(value)
    except ValueError:
        return None
    return value


def _amount(value: Decimal) -> dict[str, str]:
    return {"currency": CURRENCY, "amount": f"{value:.2f}"}


def account_json(account: Account, prefix: str) -> dict[str, Any]:
    base = f"{prefix}/v1/accounts/{account.account_id}"
    return {
        "resourceId": account.account_id,
        "iban": iban_of(account),
        "currency": CURRENCY,
        "name": account.nickname,
        "product": account.sub_type,
        "cashAccountType": "CACC" if account.sub_type == "CurrentAccount" else "SVGS",
        "status": "enabled",
        "ownerName": account.holder_name,
        "_links": {"balances": {"href": f"{base}/balances"},
                   "transactions": {"href": f"{base}/transactions"}},
    }


def balances_json(account: Account, now: str) -> list[dict[str, Any]]:
    booked, available = account.booked_balance(), account.available_balance()
    out: list[dict[str, Any]] = [
        {"balanceType": "interimBooked", "balanceAmount": _amount(booked),
         "lastChangeDateTime": now},
        {"balanceType": "interimAvailable", "balanceAmount": _amount(available),
         "creditLimitIncluded": False, "lastChangeDateTime": now},
    ]
    if account.overdraft is not None:
        out.append({"balanceType": "interimAvailable", "creditLimitIncluded": True,
                    "balanceAmount": _amount(available + account.overdraft),
                    "lastChangeDateTime": now})
    return out


def transaction_json(txn: Transaction) -> dict[str, Any]:
    signed = txn.amount if txn.credit else -txn.amount
    body: dict[str, Any] = {
        "transactionId": txn.transaction_id,
        "bookingDate": txn.booked_at.date().isoformat(),
        "transactionAmount": _amount(signed),
        "remittanceInformationUnstructured": txn.information,
        "bankTransactionCode": f"PMNT-{txn.bank_code[0][:4]}-{txn.bank_code[1][:4]}",
    }
    if txn.value_at is not None:
        body["valueDate"] = txn.value_at.date().isoformat()
    if txn.merchant:
        body["creditorName"] = txn.merchant[0]
        body["merchantCategoryCode"] = txn.merchant[1]
    elif txn.counterparty:
        body["debtorName" if txn.credit else "creditorName"] = txn.counterparty[0]
    return body


class BerlinViews:
    """The consent and account endpoints of one provider (one SCA approach)."""

    def __init__(self, approach: str, consents: BerlinConsents, ledger: Ledger,
                 store: TokenStore, clients: Sequence[ClientModel], page_size: int) -> None:
        self.approach = approach
        self.prefix = PROVIDERS[approach]
        self.consents = consents
        self.ledger = ledger
        self.store = store
        self.clients = clients
        self.page_size = page_size

    def routes(self) -> list[Route]:
        return [
            Route("/v1/consents", self.create, methods=["POST"]),
            Route("/v1/consents/{consent_id}", self.read, methods=["GET"]),
            Route("/v1/consents/{consent_id}", self.delete, methods=["DELETE"]),
            Route("/v1/consents/{consent_id}/status", self.status, methods=["GET"]),
            Route("/v1/accounts", self.accounts, methods=["GET"]),
            Route("/v1/accounts/{account_id}", self.account, methods=["GET"]),
            Route("/v1/accounts/{account_id}/balances", self.balances, methods=["GET"]),
            Route("/v1/accounts/{account_id}/transactions", self.transactions,
                  methods=["GET"]),
        ]

    def _today(self) -> date:
        return self.ledger.today

    # -- consents ------------------------------------------------------------------------

    async def _sealed(self, request: Request) -> Response | None:
        if not self.consents.require_signatures:
            return None
        from aggregator.sandbox.berlin_seal import seal_refused  # imports this module

        return await seal_refused(request, _request_id(request))

    async def create(self, request: Request) -> Response:
        if (refused := await self._sealed(request)) is not None:
            return refused
        rid = _required_request_id(request)
        if isinstance(rid, Response):
            return rid
        if not request.headers.get("psu-ip-address"):
            # The user is present when a consent is created; the bank's fraud checks
            # need the address (guidelines: PSU-IP-Address, mandatory for AIS consents).
            return tpp_error(400, "FORMAT_ERROR", "PSU-IP-Address is required.", rid)
        redirect_uri = request.headers.get("tpp-redirect-uri")
        if self.approach == REDIRECT:
            if request.headers.get("tpp-redirect-preferred", "true").lower() == "false":
                return tpp_error(400, "SCA_METHOD_UNKNOWN",
                                 "Only the redirect SCA approach is offered here.", rid)
            if not redirect_uri or not self._registered(redirect_uri):
                return tpp_error(400, "FORMAT_ERROR",
                                 "TPP-Redirect-URI is missing or not registered.", rid)
        nok = request.headers.get("tpp-nok-redirect-uri")
        if nok is not None and not self._registered(nok):
            return tpp_error(400, "FORMAT_ERROR", "TPP-Nok-Redirect-URI is not registered.",
                             rid)
        try:
            body = json.loads(await request.body())
            fields = _consent_fields(body, self._today())
        except (ValueError, AccessError) as exc:
            return tpp_error(400, "FORMAT_ERROR", str(exc) or "Invalid JSON.", rid)
        access, recurring, valid_until, frequency = fields
        consent = self.consents.create(
            access, recurring=recurring, valid_until=valid_until,
            frequency_per_day=frequency, approach=self.approach, today=self._today(),
            redirect_uri=redirect_uri, nok_redirect_uri=nok,
        )
        own = f"{self.prefix}/v1/consents/{consent.consent_id}"
        links: dict[str, dict[str, str]] = {
            "self": {"href": own}, "status": {"href": f"{own}/status"},
        }
        if self.approach == OAUTH:
            links["scaOAuth"] = {
                "href": current_issuer() + "/.well-known/oauth-authorization-server"}
        else:
            links["scaRedirect"] = {
                "href": f"{current_issuer()}{SCA_PATH}/{consent.authorisation_id}"}
        answer = {"consentStatus": RECEIVED, "consentId": consent.consent_id,
                  "_links": links}
        return JSONResponse(answer, status_code=201, headers={
            "X-Request-ID": rid, "Location": own, "ASPSP-SCA-Approach": self.approach,
        })

    async def read(self, request: Request) -> Response:
        if (refused := await self._sealed(request)) is not None:
            return refused
        found = self._own_consent(request)
        if isinstance(found, Response):
            return found
        consent, rid = found
        return JSONResponse({
            "access": consent.access.as_json(), "recurringIndicator": consent.recurring,
            "validUntil": consent.valid_until.isoformat(),
            "frequencyPerDay": consent.frequency_per_day,
            "lastActionDate": self._today().isoformat(),
            "consentStatus": self.consents.status_of(consent),
        }, headers={"X-Request-ID": rid})

    async def status(self, request: Request) -> Response:
        if (refused := await self._sealed(request)) is not None:
            return refused
        found = self._own_consent(request)
        if isinstance(found, Response):
            return found
        consent, rid = found
        return JSONResponse({"consentStatus": self.consents.status_of(consent)},
                            headers={"X-Request-ID": rid})

    async def delete(self, request: Request) -> Response:
        if (refused := await self._sealed(request)) is not None:
            return refused
        found = self._own_consent(request)
        if isinstance(found, Response):
            return found
        consent, rid = found
        self.consents.terminate(consent)
        return Response(status_code=204, headers={"X-Request-ID": rid})

    def _own_consent(self, request: Request) -> tuple[Consent, str] | Response:
        rid = _required_request_id(request)
        if isinstance(rid, Response):
            return rid
        consent = self.consents.get(request.path_params["consent_id"], self._today())
        if consent is None or consent.approach != self.approach:
            # In the path, an unknown consent is 403 (guidelines: CONSENT_UNKNOWN).
            return tpp_error(403, "CONSENT_UNKNOWN", "No such consent.", rid)
        return consent, rid

    def _registered(self, uri: str) -> bool:
        # The QWAC would name the TPP; without mTLS, a registered client's URI stands in.
        # Its query is the TPP's own (it carries the TPP's state), so it is not compared.
        uri = urlunsplit(urlsplit(uri)._replace(query=""))
        return any(redirect_uri_matches(r, uri)
                   for c in self.clients for r in c.settings.redirect_uris)

    # -- account information ---------------------------------------------------------------

    async def accounts(self, request: Request) -> Response:
        if (refused := await self._sealed(request)) is not None:
            return refused
        checked = self._authorised(request, LIST, None)
        if isinstance(checked, Response):
            return checked
        consent, rid, user = checked
        with self.ledger.lock:
            data = [account_json(a, self.prefix) for a in self.ledger.accounts_of(user)
                    if consent.covers(LIST, iban_of(a))]
        return JSONResponse({"accounts": data}, headers={"X-Request-ID": rid})

    async def account(self, request: Request) -> Response:
        return await self._per_account(request, LIST)

    async def balances(self, request: Request) -> Response:
        return await self._per_account(request, BALANCES)

    async def transactions(self, request: Request) -> Response:
        return await self._per_account(request, TRANSACTIONS)

    async def _per_account(self, request: Request, resource: str) -> Response:
        if (refused := await self._sealed(request)) is not None:
            return refused
        checked = self._authorised(request, resource, request.path_params["account_id"])
        if isinstance(checked, Response):
            return checked
        _, rid, user = checked
        account = self.ledger.account_of(user, request.path_params["account_id"])
        assert account is not None  # _authorised found it
        headers = {"X-Request-ID": rid}
        ref = {"iban": iban_of(account), "currency": CURRENCY}
        if resource == LIST:
            return JSONResponse({"account": account_json(account, self.prefix)},
                                headers=headers)
        if resource == BALANCES:
            with self.ledger.lock:
                now = self.ledger.now().isoformat(timespec="seconds")
                data = balances_json(account, now)
            return JSONResponse({"account": ref, "balances": data}, headers=headers)
        return self._transactions(request, account, ref, rid)

    def _transactions(self, request: Request, account: Account, ref: dict[str, str],
                      rid: str) -> Response:
        query = request.query_params
        status = query.get("bookingStatus")
        if status not in ("booked", "pending", "both"):
            return tpp_error(400, "PARAMETER_NOT_SUPPORTED",
                             "bookingStatus must be booked, pending or both.", rid)
        try:
            since = date.fromisoformat(query["dateFrom"]) if "dateFrom" in query else None
            page = int(query.get("page", "1"))
        except ValueError:
            return tpp_error(400, "FORMAT_ERROR", "Invalid dateFrom or page.", rid)
        if page < 1:
            return tpp_error(400, "FORMAT_ERROR", "Invalid page.", rid)
        with self.ledger.lock:
            chosen = sorted(
                (t for t in account.transactions
                 if (since is None or t.booked_at.date() >= since)
                 and (status == "both" or t.status.lower() == status)),
                key=lambda t: (t.booked_at, t.transaction_id), reverse=True)
            chunk = chosen[(page - 1) * self.page_size: page * self.page_size]
            report: dict[str, Any] = {
                "booked": [transaction_json(t) for t in chunk if t.status == "Booked"],
                "pending": [transaction_json(t) for t in chunk if t.status != "Booked"],
            }
        if page * self.page_size < len(chosen):
            params = {k: v for k, v in query.items() if k != "page"}
            # Relative to the host, as many banks send it; the client resolves it.
            report["_links"] = {"next": {"href": f"{request.url.path}?"
                                         f"{urlencode({**params, 'page': page + 1})}"}}
        return JSONResponse({"account": ref, "transactions": report},
                            headers={"X-Request-ID": rid})

    def _authorised(self, request: Request, resource: str, account_id: str | None
                    ) -> tuple[Consent, str, str] | Response:
        """Check X-Request-ID, Consent-ID, the token (OAuth), coverage and the day's use."""
        rid = _required_request_id(request)
        if isinstance(rid, Response):
            return rid
        consent_id = request.headers.get("consent-id", "")
        consent = self.consents.get(consent_id, self._today()) if consent_id else None
        if consent is None or consent.approach != self.approach:
            # In a header, an unknown consent is 400 (guidelines: CONSENT_UNKNOWN).
            return tpp_error(400, "CONSENT_UNKNOWN", "Consent-ID names no consent.", rid)
        if consent.status == "expired":
            return tpp_error(401, "CONSENT_EXPIRED", "The consent has expired.", rid)
        if consent.status != VALID or consent.user is None:
            return tpp_error(401, "CONSENT_INVALID", f"The consent is {consent.status}.", rid)
        if self.approach == OAUTH and not self._token_for(request, consent.consent_id):
            return tpp_error(401, "TOKEN_INVALID", "Missing or invalid access token.", rid,
                             {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        iban = None
        if account_id is not None:
            account = self.ledger.account_of(consent.user, account_id)
            if account is None:
                return tpp_error(404, "RESOURCE_UNKNOWN", "No such account.", rid)
            iban = iban_of(account)
            if not consent.covers(resource, iban):
                return tpp_error(401, "CONSENT_INVALID",
                                 "The consent does not cover this resource.", rid)
        unattended = not request.headers.get("psu-ip-address")
        first_page = request.query_params.get("page", "1") == "1"
        if unattended and first_page and consent.recurring and not \
                self.consents.count_unattended(consent, resource, iban, self._today()):
            return tpp_error(429, "ACCESS_EXCEEDED",
                             "frequencyPerDay exceeded for this resource today.", rid)
        return consent, rid, consent.user

    def _token_for(self, request: Request, consent_id: str) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        record = self.store.find_access(value.strip()) if scheme.lower() == "bearer" else None
        return record is not None and SCOPE_PREFIX + consent_id in record.scope.split()


def _consent_fields(body: object, today: date) -> tuple[Access, bool, date, int]:
    if not isinstance(body, dict):
        raise AccessError("the body must be a JSON object")
    access = Access.parse(body.get("access"))
    recurring = body.get("recurringIndicator")
    combined = body.get("combinedServiceIndicator")
    frequency = body.get("frequencyPerDay")
    if not isinstance(recurring, bool):
        raise AccessError("recurringIndicator must be a boolean")
    if not isinstance(combined, bool):
        raise AccessError("combinedServiceIndicator must be a boolean")
    if combined:
        raise AccessError("combinedServiceIndicator: combined AIS/PIS sessions are not offered")
    if not isinstance(frequency, int) or isinstance(frequency, bool) or frequency < 1:
        raise AccessError("frequencyPerDay must be a positive integer")
    if not recurring and frequency != 1:
        raise AccessError("frequencyPerDay must be 1 for a one-off consent")
    raw_until = body.get("validUntil")
    if not isinstance(raw_until, str):
        raise AccessError("validUntil must be an ISO date")
    valid_until = date.fromisoformat(raw_until)
    if valid_until < today:
        raise AccessError("validUntil lies in the past")
    return access, recurring, valid_until, frequency
