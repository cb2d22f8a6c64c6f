"""The account-information API, in the UK Open Banking (OBIE) Read/Write API v3.1 dialect.

Shapes follow the published v3.1 Account and Transaction API specification: every answer
is a ``Data``/``Links``/``Meta`` envelope, amounts are decimal strings with a currency
and a separate ``CreditDebitIndicator``, dates are ISO 8601 with an offset, long lists
are paged through ``Links.Next``, and errors use ``OBErrorResponse1``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.sandbox.ledger import Account, Ledger, Transaction
from aggregator.sandbox.middleware import current_issuer
from aggregator.sandbox.models import TokenRecord
from aggregator.sandbox.store import TokenStore

AISP_PREFIX = "/open-banking/v3.1/aisp"
REQUIRED_SCOPE = "accounts"


def obie_error(
    status: int, error_code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "Code": str(status),
        "Id": str(uuid.uuid4()),
        "Message": message,
        "Errors": [{"ErrorCode": error_code, "Message": message}],
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _amount(value: Any, currency: str) -> dict[str, str]:
    return {"Amount": f"{abs(value):.2f}", "Currency": currency}


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def account_json(account: Account) -> dict[str, Any]:
    return {
        "AccountId": account.account_id,
        "Status": "Enabled",
        "StatusUpdateDateTime": _when(
            datetime.combine(account.opening_date, datetime.min.time(), UTC)
        ),
        "Currency": account.currency,
        "AccountType": "Personal",
        "AccountSubType": account.sub_type,
        "Nickname": account.nickname,
        "OpeningDate": _when(datetime.combine(account.opening_date, datetime.min.time(), UTC)),
        "Account": [
            {
                "SchemeName": "UK.OBIE.SortCodeAccountNumber",
                "Identification": account.identification,
                "Name": account.holder_name,
            }
        ],
    }


def balances_json(account: Account, now: datetime) -> list[dict[str, Any]]:
    balances = []
    for kind, value in (
        ("InterimBooked", account.booked_balance()),
        ("InterimAvailable", account.available_balance()),
    ):
        balance: dict[str, Any] = {
            "AccountId": account.account_id,
            "Amount": _amount(value, account.currency),
            "CreditDebitIndicator": "Credit" if value >= 0 else "Debit",
            "Type": kind,
            "DateTime": _when(now),
        }
        if kind == "InterimAvailable" and account.overdraft is not None:
            balance["CreditLine"] = [
                {
                    "Included": False,
                    "Type": "Pre-Agreed",
                    "Amount": _amount(account.overdraft, account.currency),
                }
            ]
        balances.append(balance)
    return balances


def transaction_json(txn: Transaction, currency: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "AccountId": txn.account_id,
        "TransactionId": txn.transaction_id,
        "CreditDebitIndicator": "Credit" if txn.credit else "Debit",
        "Status": txn.status,
        "BookingDateTime": _when(txn.booked_at),
        "TransactionInformation": txn.information,
        "Amount": _amount(txn.amount, currency),
        "BankTransactionCode": {"Code": txn.bank_code[0], "SubCode": txn.bank_code[1]},
    }
    if txn.value_at is not None:
        body["ValueDateTime"] = _when(txn.value_at)
    if txn.reference:
        body["TransactionReference"] = txn.reference
    if txn.merchant:
        body["MerchantDetails"] = {
            "MerchantName": txn.merchant[0],
            "MerchantCategoryCode": txn.merchant[1],
        }
    if txn.counterparty:
        party = {
            "SchemeName": "UK.OBIE.SortCodeAccountNumber",
            "Identification": txn.counterparty[1],
            "Name": txn.counterparty[0],
        }
        body["DebtorAccount" if txn.credit else "CreditorAccount"] = party
    return body


def _parse_when(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)  # ValueError on garbage: caller answers 400
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class AccountViews:
    """``/accounts``, ``/accounts/{AccountId}``, its ``/balances`` and ``/transactions``."""

    def __init__(self, store: TokenStore, ledger: Ledger, page_size: int) -> None:
        self.store = store
        self.ledger = ledger
        self.page_size = page_size

    def routes(self) -> list[Route]:
        return [
            Route("/accounts", self.accounts, methods=["GET"]),
            Route("/accounts/{account_id}", self.account, methods=["GET"]),
            Route("/accounts/{account_id}/balances", self.balances, methods=["GET"]),
            Route("/accounts/{account_id}/transactions", self.transactions, methods=["GET"]),
        ]

    async def accounts(self, request: Request) -> Response:
        token = self._token(request)
        if isinstance(token, Response):
            return token
        with self.ledger.lock:
            data = [account_json(a) for a in self.ledger.accounts_of(token.user)]
        return _envelope({"Account": data}, self._self_link(request))

    async def account(self, request: Request) -> Response:
        found = self._account(request)
        if isinstance(found, Response):
            return found
        with self.ledger.lock:
            data = [account_json(found)]
        return _envelope({"Account": data}, self._self_link(request))

    async def balances(self, request: Request) -> Response:
        found = self._account(request)
        if isinstance(found, Response):
            return found
        with self.ledger.lock:
            data = balances_json(found, self.ledger.now())
        return _envelope({"Balance": data}, self._self_link(request))

    async def transactions(self, request: Request) -> Response:
        found = self._account(request)
        if isinstance(found, Response):
            return found
        query = request.query_params
        try:
            since = _parse_when(query.get("fromBookingDateTime"))
            until = _parse_when(query.get("toBookingDateTime"))
            page = int(query.get("page", "1"))
        except ValueError:
            return obie_error(400, "UK.OBIE.Field.Invalid", "Invalid paging or date filter.")
        if page < 1:
            return obie_error(400, "UK.OBIE.Field.Invalid", "Invalid paging or date filter.")
        with self.ledger.lock:
            selected = [
                t
                for t in found.transactions
                if (since is None or t.booked_at >= since)
                and (until is None or t.booked_at <= until)
            ]
            selected.sort(key=lambda t: (t.booked_at, t.transaction_id), reverse=True)
            total_pages = max(1, -(-len(selected) // self.page_size))
            chunk = selected[(page - 1) * self.page_size : page * self.page_size]
            data = [transaction_json(t, found.currency) for t in chunk]
        links = self._page_links(request, page, total_pages)
        meta: dict[str, Any] = {"TotalPages": total_pages}
        if selected:
            meta["FirstAvailableDateTime"] = _when(selected[-1].booked_at)
            meta["LastAvailableDateTime"] = _when(selected[0].booked_at)
        return JSONResponse({"Data": {"Transaction": data}, "Links": links, "Meta": meta})

    def _token(self, request: Request) -> TokenRecord | Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        record = self.store.find_access(value.strip()) if scheme.lower() == "bearer" else None
        if record is None:
            # RFC 6750 §3.1; no detail on why: that would help an attacker, not a client.
            challenge = 'Bearer error="invalid_token"'
            return obie_error(
                401,
                "UK.OBIE.Unauthorized",
                "Missing or invalid access token.",
                {"WWW-Authenticate": challenge},
            )
        if REQUIRED_SCOPE not in record.scope.split():
            challenge = f'Bearer error="insufficient_scope", scope="{REQUIRED_SCOPE}"'
            return obie_error(
                403,
                "UK.OBIE.Forbidden",
                "The token lacks the accounts scope.",
                {"WWW-Authenticate": challenge},
            )
        return record

    def _account(self, request: Request) -> Account | Response:
        token = self._token(request)
        if isinstance(token, Response):
            return token
        found = self.ledger.account_of(token.user, request.path_params["account_id"])
        if found is None:
            return obie_error(404, "UK.OBIE.Resource.NotFound", "No such account for this consent.")
        return found

    def _self_link(self, request: Request) -> str:
        url = current_issuer() + request.url.path
        return f"{url}?{request.url.query}" if request.url.query else url

    def _page_links(self, request: Request, page: int, total_pages: int) -> dict[str, str]:
        base = current_issuer() + request.url.path
        params = {k: v for k, v in request.query_params.items() if k != "page"}

        def link(number: int) -> str:
            return f"{base}?{urlencode({**params, 'page': number})}"

        links = {"Self": link(page), "First": link(1), "Last": link(total_pages)}
        if page > 1:
            links["Prev"] = link(min(page - 1, total_pages))
        if page < total_pages:
            links["Next"] = link(page + 1)
        return links


def _envelope(data: dict[str, Any], self_link: str) -> JSONResponse:
    return JSONResponse({"Data": data, "Links": {"Self": self_link}, "Meta": {"TotalPages": 1}})
