"""The sandbox OBIE mode's account API: what the token's consent allows, nothing more.

OBIE Account and Transaction API v3.1, "Permission Codes": ``ReadAccountsBasic`` lists
accounts without identifiers or holder names (``…Detail`` adds them), ``ReadBalances``
opens balances, ``ReadTransactionsBasic``/``…Detail`` transactions (without or with
descriptions and counterparties) in the directions ``…Credits``/``…Debits`` allow, from
``TransactionFromDateTime``; only the accounts the user picked are served, and nothing
once the consent is revoked or expired (``403 UK.OBIE.Resource.ConsentMismatch``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aggregator.sandbox.aisp import AccountViews, obie_error
from aggregator.sandbox.ledger import Account
from aggregator.sandbox.obie_consents import AccessConsent, ConsentStore
from aggregator.sandbox.store import TokenStore

__all__ = ["ObieAccountViews"]


class ObieAccountViews(AccountViews):
    """The account API, serving what the token's consent allows and nothing more."""

    def __init__(self, store: TokenStore, ledger: Any, page_size: int,
                 consents: ConsentStore) -> None:
        super().__init__(store, ledger, page_size)
        self.consents = consents

    async def accounts(self, request: Request) -> Response:
        consent = self._consent(request, "ReadAccountsBasic", "ReadAccountsDetail")
        if isinstance(consent, Response):
            return consent
        response = await super().accounts(request)
        return _filtered(response, "Account", consent, detail="ReadAccountsDetail")

    async def account(self, request: Request) -> Response:
        consent = self._consent(request, "ReadAccountsBasic", "ReadAccountsDetail")
        if isinstance(consent, Response):
            return consent
        response = await super().account(request)
        return _filtered(response, "Account", consent, detail="ReadAccountsDetail")

    async def balances(self, request: Request) -> Response:
        consent = self._consent(request, "ReadBalances")
        return consent if isinstance(consent, Response) else await super().balances(request)

    async def transactions(self, request: Request) -> Response:
        consent = self._consent(request, "ReadTransactionsBasic", "ReadTransactionsDetail")
        if isinstance(consent, Response):
            return consent
        response = await super().transactions(request)
        return _filtered(response, "Transaction", consent, detail="ReadTransactionsDetail")

    def _account(self, request: Request) -> Account | Response:
        consent = self._consent(request)
        if isinstance(consent, Response):
            return consent
        if request.path_params["account_id"] not in consent.account_ids:
            return obie_error(403, "UK.OBIE.Resource.ConsentMismatch",
                              "The consent does not cover this account.")
        return super()._account(request)

    def _consent(self, request: Request, *needs: str) -> AccessConsent | Response:
        token = self._token(request)
        if isinstance(token, Response):
            return token
        consent = self.consents.for_grant(token.grant_id)
        if consent is None or not consent.usable(self.consents.now()):
            return obie_error(403, "UK.OBIE.Resource.ConsentMismatch",
                              "The consent is not authorised.")
        if needs and not consent.allows(*needs):
            return obie_error(403, "UK.OBIE.Resource.ConsentMismatch",
                              "The consent does not grant this resource.")
        return consent


def _filtered(response: Response, key: str, consent: AccessConsent, *, detail: str) -> Response:
    if response.status_code != 200:
        return response
    body = json.loads(bytes(response.body))
    items = body["Data"].get(key, [])
    if key == "Account":
        items = [a for a in items if a["AccountId"] in consent.account_ids]
    else:
        credits = consent.allows("ReadTransactionsCredits")
        debits = consent.allows("ReadTransactionsDebits")
        items = [t for t in items if (credits if t["CreditDebitIndicator"] == "Credit"
                                      else debits)]
        if consent.transactions_from is not None:
            since = consent.transactions_from
            items = [t for t in items
                     if datetime.fromisoformat(t["BookingDateTime"]) >= since]
    if not consent.allows(detail):
        # *Basic: no identifiers, names, descriptions or counterparties (OBIE
        # "Permission Codes").
        for item in items:
            for field in ("Account", "TransactionInformation", "MerchantDetails",
                          "DebtorAccount", "CreditorAccount", "TransactionReference"):
                item.pop(field, None)
    body["Data"][key] = items
    return JSONResponse(body, headers={k: v for k, v in response.headers.items()
                                       if k.lower() not in ("content-length", "content-type")})
