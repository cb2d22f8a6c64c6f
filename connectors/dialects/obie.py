"""UK Open Banking (OBIE) Read/Write Account and Transaction API v3.1.

Resources under the profile's base URL (``…/open-banking/v3.1/aisp``): ``/accounts``,
``/accounts/{AccountId}/balances`` and ``/accounts/{AccountId}/transactions``, each
answering a ``Data``/``Links``/``Meta`` envelope and paging through ``Links.Next``.

Spec points the mapping relies on:

- amounts are unsigned decimal strings; ``CreditDebitIndicator`` carries the direction
  (``Debit`` is money out of the account, or a balance the holder owes);
- every response date-time carries an offset; filter date-times carry none
  (``fromBookingDateTime=2024-03-01T00:00:00``);
- FAPI: each request sends a fresh ``x-fapi-interaction-id`` that the bank echoes;
  ``x-fapi-financial-id`` and ``x-fapi-customer-ip-address``, when a bank wants them, come
  from the profile's extra headers.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import ClassVar

from connectors.errors import BankProtocolError
from connectors.models import Account, AccountType, Balance, Transaction, TransactionStatus

from .base import HttpDialect
from .parsing import (
    JsonObject,
    dedupe,
    mask,
    obj,
    opt_array,
    opt_bool,
    opt_obj,
    opt_text,
    parse_amount,
    parse_currency,
    parse_day,
    parse_instant,
    synthetic_id,
    text,
    with_sign,
)

__all__ = ["ObieDialect"]

_SUBTYPES = {
    "CurrentAccount": AccountType.CHECKING,
    "Savings": AccountType.SAVINGS,
    "CreditCard": AccountType.CREDIT_CARD,
    "ChargeCard": AccountType.CREDIT_CARD,
    "Loan": AccountType.LOAN,
    "Mortgage": AccountType.LOAN,
    "EMoney": AccountType.OTHER,
    "PrePaidCard": AccountType.OTHER,
}
_STATUSES = {"Booked": TransactionStatus.BOOKED, "Pending": TransactionStatus.PENDING}
# Newer minor versions add "Rejected": an entry that never moved money, so it is skipped.
_SKIPPED_STATUSES = frozenset({"Rejected"})
# Preference order; interim balances are fresher than the previous day's closing ones.
_CURRENT_TYPES = ("InterimBooked", "ClosingBooked", "Expected")
_AVAILABLE_TYPES = ("InterimAvailable", "ClosingAvailable")


def _next_link(page: JsonObject) -> str | None:
    links = opt_obj(page, "Links", "")
    return None if links is None else opt_text(links, "Next", "Links")


def _data_list(page: JsonObject, key: str) -> list[object]:
    data = obj(page.get("Data"), "Data")
    return opt_array(data, key, "Data")


def _signed_amount(raw: JsonObject, where: str) -> tuple[Decimal, str]:
    money = obj(raw.get("Amount"), f"{where}.Amount")
    amount = parse_amount(money.get("Amount"), f"{where}.Amount.Amount", signed=False)
    currency = parse_currency(money.get("Currency"), f"{where}.Amount.Currency")
    indicator = text(raw, "CreditDebitIndicator", where)
    if indicator not in ("Credit", "Debit"):
        raise BankProtocolError(f"{where}.CreditDebitIndicator: expected Credit or Debit")
    return with_sign(amount, negative=indicator == "Debit"), currency


def _humanize(code: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", code)


class ObieDialect(HttpDialect):
    """OBIE v3.1 account information, read with a consent's access token.

    ``pending_predecessor`` is the hook for a bank that links a booked entry to the
    pending one it replaces (the standard has no field for it); override it in a
    bank-specific subclass.
    """

    name: ClassVar[str] = "obie"
    request_id_header: ClassVar[str] = "x-fapi-interaction-id"

    async def accounts(self) -> list[Account]:
        found: list[Account] = []
        async for page in self._pages(self._url("accounts"), None, _next_link):
            for i, raw in enumerate(_data_list(page, "Account")):
                where = f"Data.Account[{i}]"
                found.append(self._account(obj(raw, where), where))
        return found

    async def balances(self, account_id: str) -> list[Balance]:
        url = self._url("accounts", account_id, "balances")
        by_currency: dict[str, list[_Entry]] = {}
        async for page in self._pages(url, None, _next_link):
            for i, raw in enumerate(_data_list(page, "Balance")):
                entry = _Entry.parse(obj(raw, f"Data.Balance[{i}]"), account_id, i)
                by_currency.setdefault(entry.currency, []).append(entry)
        return [_balance(account_id, cur, entries) for cur, entries in by_currency.items()]

    async def transactions(self, account_id: str, since: date | None) -> list[Transaction]:
        url = self._url("accounts", account_id, "transactions")
        params = None if since is None else {"fromBookingDateTime": f"{since.isoformat()}T00:00:00"}
        found: list[Transaction] = []
        async for page in self._pages(url, params, _next_link):
            for i, raw in enumerate(_data_list(page, "Transaction")):
                where = f"Data.Transaction[{i}]"
                txn = self._transaction(obj(raw, where), account_id, where)
                if txn is not None:
                    found.append(txn)
        return dedupe(found)

    def pending_predecessor(self, raw: JsonObject) -> str | None:
        """Return the id of the pending entry ``raw`` (a booked entry) replaces, if known."""
        return None

    def _account(self, raw: JsonObject, where: str) -> Account:
        sub_type = opt_text(raw, "AccountSubType", where)
        identifier = holder = None
        ids = opt_array(raw, "Account", where)
        if ids:  # absent under ReadAccountsBasic; the first entry is the primary one
            first = obj(ids[0], f"{where}.Account[0]")
            identifier = _identifier(first, f"{where}.Account[0]")
            holder = opt_text(first, "Name", f"{where}.Account[0]")
        return Account(
            bank_account_id=text(raw, "AccountId", where),
            name=opt_text(raw, "Nickname", where)
            or opt_text(raw, "Description", where)
            or _humanize(sub_type or "Account"),
            type=_SUBTYPES.get(sub_type or "", AccountType.OTHER),
            currency=parse_currency(raw.get("Currency"), f"{where}.Currency"),
            masked_identifier=None if identifier is None else mask(identifier),
            identifier=identifier,
            holder_name=holder,
        )

    def _transaction(self, raw: JsonObject, account_id: str, where: str) -> Transaction | None:
        status_code = text(raw, "Status", where)
        if status_code in _SKIPPED_STATUSES:
            return None
        status = _STATUSES.get(status_code)
        if status is None:
            raise BankProtocolError(f"{where}.Status: unknown entry status")
        if text(raw, "AccountId", where) != account_id:
            raise BankProtocolError(f"{where}.AccountId: entry belongs to another account")
        amount, currency = _signed_amount(raw, where)
        booking = text(raw, "BookingDateTime", where)
        value_time = raw.get("ValueDateTime")
        merchant_where = f"{where}.MerchantDetails"
        merchant = opt_obj(raw, "MerchantDetails", where) or {}
        party_key = "CreditorAccount" if amount < 0 else "DebtorAccount"  # the other side
        party = opt_obj(raw, party_key, where) or {}
        return Transaction(
            bank_transaction_id=opt_text(raw, "TransactionId", where)
            or synthetic_id(account_id, status_code, booking, str(amount), currency),
            bank_account_id=account_id,
            amount=amount,
            currency=currency,
            booked_date=parse_day(booking, f"{where}.BookingDateTime"),
            value_date=(
                None if value_time is None else parse_day(value_time, f"{where}.ValueDateTime")
            ),
            status=status,
            description=opt_text(raw, "TransactionInformation", where) or "",
            counterparty=opt_text(merchant, "MerchantName", merchant_where)
            or opt_text(party, "Name", f"{where}.{party_key}"),
            merchant_category=opt_text(merchant, "MerchantCategoryCode", merchant_where),
            pending_transaction_id=(
                self.pending_predecessor(raw) if status is TransactionStatus.BOOKED else None
            ),
        )


def _identifier(raw: JsonObject, where: str) -> str:
    """The account number as the bank gives it, without spaces; a card number only masked."""
    scheme = text(raw, "SchemeName", where).removeprefix("UK.OBIE.")
    identification = "".join(text(raw, "Identification", where).split())
    if scheme == "PAN":  # PCI DSS: we never hold a full PAN, not even sealed
        return mask(identification)
    return identification


class _Entry:
    """One ``Data.Balance`` item, signed and typed, before choosing among them."""

    __slots__ = ("amount", "credit_limit", "currency", "type", "when")

    def __init__(
        self, type_: str, amount: Decimal, currency: str, when: datetime, limit: Decimal | None
    ) -> None:
        self.type = type_
        self.amount = amount
        self.currency = currency
        self.when = when
        self.credit_limit = limit

    @classmethod
    def parse(cls, raw: JsonObject, account_id: str, index: int) -> _Entry:
        where = f"Data.Balance[{index}]"
        if text(raw, "AccountId", where) != account_id:
            raise BankProtocolError(f"{where}.AccountId: balance belongs to another account")
        amount, currency = _signed_amount(raw, where)
        when = parse_instant(raw.get("DateTime"), f"{where}.DateTime")
        limit: Decimal | None = None
        for j, line_raw in enumerate(opt_array(raw, "CreditLine", where)):
            line_where = f"{where}.CreditLine[{j}]"
            line = obj(line_raw, line_where)
            money = opt_obj(line, "Amount", line_where)
            if opt_bool(line, "Included", line_where) and money is not None:
                value = parse_amount(money.get("Amount"), f"{line_where}.Amount", signed=False)
                limit = value if limit is None else limit + value
        return cls(text(raw, "Type", where), amount, currency, when, limit)


def _pick(entries: list[_Entry], types: tuple[str, ...]) -> _Entry | None:
    for balance_type in types:
        matching = [e for e in entries if e.type == balance_type]
        if matching:
            return max(matching, key=lambda e: e.when)
    return None


def _balance(account_id: str, currency: str, entries: list[_Entry]) -> Balance:
    current = _pick(entries, _CURRENT_TYPES)
    if current is None:
        types = sorted({e.type for e in entries})
        raise BankProtocolError(f"no booked balance in {currency} among types {types}")
    available = _pick(entries, _AVAILABLE_TYPES)
    with_limit = [e for e in (available, current) if e is not None and e.credit_limit is not None]
    return Balance(
        bank_account_id=account_id,
        current=current.amount,
        available=None if available is None else available.amount,
        credit_limit=with_limit[0].credit_limit if with_limit else None,
        currency=currency,
        as_of=current.when,
    )
