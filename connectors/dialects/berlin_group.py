"""Berlin Group NextGenPSD2 XS2A framework v1.3, account information service.

Resources under the profile's base URL: ``/v1/accounts``, ``/v1/accounts/{resourceId}/balances``
and ``/v1/accounts/{resourceId}/transactions?bookingStatus=both``; transaction reports page
through ``_links.next.href`` (often relative to the host).

Spec points the mapping relies on:

- amounts are decimal strings carrying their own sign (``"-12.30"`` left the account);
- every request needs the consent's ``Consent-ID`` (from the consent manager's resource
  headers, one per connection) and a fresh ``X-Request-ID``, which the bank echoes; the
  bearer token only in the OAuth2 SCA approach (the redirect approach has none);
- errors are ``tppMessages`` (:mod:`.berlin_errors`): a dead consent, a spent
  ``frequencyPerDay`` (429 ``ACCESS_EXCEEDED``);
- ``transactionId`` is optional; ``entryReference`` stands in for it, and an entry with
  neither (pending entries often) gets a synthetic id from its non-PII fields;
- ``creditLimitIncluded`` only flags whether a balance counts the credit line in. Banks that
  report one balance type both with and without it reveal the limit as the difference,
  and that is the only way this API exposes it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import ClassVar

import httpx

from connectors.errors import BankProtocolError
from connectors.models import Account, AccountType, Balance, Transaction, TransactionStatus

from .base import HttpDialect
from .berlin_errors import raise_for_tpp_messages
from .parsing import (
    JsonObject,
    array,
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
)

__all__ = ["BerlinGroupDialect"]

# ISO 20022 ExternalCashAccountType1Code, as NextGenPSD2 reports it in cashAccountType.
_CASH_ACCOUNT_TYPES = {
    "CACC": AccountType.CHECKING,  # current account
    "CASH": AccountType.CHECKING,  # cash payment account
    "SLRY": AccountType.CHECKING,  # salary account
    "TRAN": AccountType.CHECKING,  # transacting account
    "SVGS": AccountType.SAVINGS,
    "ONDP": AccountType.SAVINGS,  # overnight deposit
    "MOMA": AccountType.SAVINGS,  # money market
    "CARD": AccountType.CREDIT_CARD,
    "LOAN": AccountType.LOAN,
    "MGLD": AccountType.LOAN,  # marginal lending
}
_CURRENT_TYPES = ("interimBooked", "closingBooked", "expected")
_AVAILABLE_TYPES = ("interimAvailable",)
# Account reference fields in the order that best identifies the account to its holder.
_IDENTIFIER_FIELDS = ("iban", "bban", "maskedPan", "msisdn")


def _next_link(page: JsonObject) -> str | None:
    for holder in (opt_obj(page, "transactions", ""), page):
        links = None if holder is None else opt_obj(holder, "_links", "transactions")
        nxt = None if links is None else opt_obj(links, "next", "_links")
        if nxt is not None:
            return text(nxt, "href", "_links.next")
    return None


class BerlinGroupDialect(HttpDialect):
    """NextGenPSD2 v1.3 account information, read under one consent (``Consent-ID``).

    ``pending_predecessor`` is the hook for a bank that links a booked entry to the
    pending one it replaces (the framework has no field for it).
    """

    name: ClassVar[str] = "berlin_group"
    request_id_header: ClassVar[str] = "X-Request-ID"
    required_headers: ClassVar[frozenset[str]] = frozenset({"Consent-ID"})
    bearer_optional: ClassVar[bool] = True  # the redirect SCA approach has no token

    @staticmethod
    def _raise_for_status(response: httpx.Response, where: str) -> None:
        """Errors from ``tppMessages`` (:mod:`connectors.dialects.berlin_errors`)."""
        raise_for_tpp_messages(response, where)

    async def accounts(self) -> list[Account]:
        page = await self._get_json(self._url("v1", "accounts"))
        found: list[Account] = []
        # Mandatory: reading a missing list as "no accounts" would look like closures.
        for i, raw in enumerate(array(page.get("accounts"), "accounts")):
            where = f"accounts[{i}]"
            found.append(_account(obj(raw, where), where))
        return found

    async def balances(self, account_id: str) -> list[Balance]:
        page = await self._get_json(self._url("v1", "accounts", account_id, "balances"))
        fetched_at = datetime.now(UTC)
        by_currency: dict[str, list[_Entry]] = {}
        for i, raw in enumerate(array(page.get("balances"), "balances")):
            entry = _Entry.parse(obj(raw, f"balances[{i}]"), f"balances[{i}]", fetched_at)
            by_currency.setdefault(entry.currency, []).append(entry)
        return [_balance(account_id, cur, entries) for cur, entries in by_currency.items()]

    async def transactions(self, account_id: str, since: date | None) -> list[Transaction]:
        url = self._url("v1", "accounts", account_id, "transactions")
        params = {"bookingStatus": "both"}
        if since is not None:
            params["dateFrom"] = since.isoformat()
        found: list[Transaction] = []
        async for page in self._pages(url, params, _next_link):
            report = opt_obj(page, "transactions", "")
            if report is None or ("booked" not in report and "pending" not in report):
                # Large reports may come only as a `_links.download` file (camt.052/MT942).
                raise BankProtocolError(
                    "transactions: no booked or pending list; download-only reports are "
                    "not supported"
                )
            for key, status in (
                ("booked", TransactionStatus.BOOKED),
                ("pending", TransactionStatus.PENDING),
            ):
                for i, raw in enumerate(opt_array(report, key, "transactions")):
                    where = f"transactions.{key}[{i}]"
                    found.append(self._transaction(obj(raw, where), account_id, status, where))
        return dedupe(found)

    def pending_predecessor(self, raw: JsonObject) -> str | None:
        """Return the id of the pending entry ``raw`` (a booked entry) replaces, if known."""
        return None

    def _transaction(
        self, raw: JsonObject, account_id: str, status: TransactionStatus, where: str
    ) -> Transaction:
        money = obj(raw.get("transactionAmount"), f"{where}.transactionAmount")
        amount = parse_amount(money.get("amount"), f"{where}.transactionAmount.amount", signed=True)
        currency = parse_currency(money.get("currency"), f"{where}.transactionAmount.currency")
        booking, value = raw.get("bookingDate"), raw.get("valueDate")
        outgoing = amount < 0
        return Transaction(
            bank_transaction_id=opt_text(raw, "transactionId", where)
            or opt_text(raw, "entryReference", where)
            or synthetic_id(
                account_id, status.value, str(booking), str(value), str(amount), currency
            ),
            bank_account_id=account_id,
            amount=amount,
            currency=currency,
            booked_date=None if booking is None else parse_day(booking, f"{where}.bookingDate"),
            value_date=None if value is None else parse_day(value, f"{where}.valueDate"),
            status=status,
            description=_description(raw, where),
            counterparty=opt_text(raw, "creditorName" if outgoing else "debtorName", where)
            or opt_text(raw, "ultimateCreditor" if outgoing else "ultimateDebtor", where),
            merchant_category=opt_text(raw, "merchantCategoryCode", where),
            pending_transaction_id=(
                self.pending_predecessor(raw) if status is TransactionStatus.BOOKED else None
            ),
        )


def _account(raw: JsonObject, where: str) -> Account:
    identifier = next(
        (value for key in _IDENTIFIER_FIELDS if (value := opt_text(raw, key, where))), None
    )
    if identifier is not None:
        identifier = "".join(identifier.split())
    cash_type = opt_text(raw, "cashAccountType", where)
    return Account(
        bank_account_id=text(raw, "resourceId", where),
        name=opt_text(raw, "name", where)
        or opt_text(raw, "displayName", where)
        or opt_text(raw, "product", where)
        or "Account",
        type=_CASH_ACCOUNT_TYPES.get(cash_type or "", AccountType.OTHER),
        currency=parse_currency(raw.get("currency"), f"{where}.currency"),
        masked_identifier=None if identifier is None else mask(identifier),
        identifier=identifier,
        holder_name=opt_text(raw, "ownerName", where),
    )


def _description(raw: JsonObject, where: str) -> str:
    """Unstructured remittance first; the structured and array variants of v1.3.x next."""
    unstructured = opt_text(raw, "remittanceInformationUnstructured", where)
    if unstructured:
        return unstructured
    lines = [
        line
        for i, item in enumerate(opt_array(raw, "remittanceInformationUnstructuredArray", where))
        if (line := _line(item, f"{where}.remittanceInformationUnstructuredArray[{i}]"))
    ]
    if lines:
        return " ".join(lines)
    structured = raw.get("remittanceInformationStructured")
    if isinstance(structured, str) and structured.strip():  # v1.3.0 to 1.3.6: a plain reference
        return structured.strip()
    if structured is not None and not isinstance(structured, str):  # v1.3.8: an object
        reference = opt_text(
            obj(structured, f"{where}.remittanceInformationStructured"),
            "reference",
            f"{where}.remittanceInformationStructured",
        )
        if reference:
            return reference
    return opt_text(raw, "additionalInformation", where) or ""


def _line(item: object, where: str) -> str | None:
    if not isinstance(item, str):
        raise BankProtocolError(f"{where}: expected a string")
    return item.strip() or None


class _Entry:
    """One ``balances[]`` item, before choosing among them."""

    __slots__ = ("amount", "currency", "limit_included", "type", "when")

    def __init__(
        self, type_: str, amount: Decimal, currency: str, when: datetime, included: bool | None
    ) -> None:
        self.type = type_
        self.amount = amount
        self.currency = currency
        self.when = when
        self.limit_included = included

    @classmethod
    def parse(cls, raw: JsonObject, where: str, fetched_at: datetime) -> _Entry:
        money = obj(raw.get("balanceAmount"), f"{where}.balanceAmount")
        amount = parse_amount(money.get("amount"), f"{where}.balanceAmount.amount", signed=True)
        currency = parse_currency(money.get("currency"), f"{where}.balanceAmount.currency")
        if raw.get("lastChangeDateTime") is not None:
            when = parse_instant(raw["lastChangeDateTime"], f"{where}.lastChangeDateTime")
        elif raw.get("referenceDate") is not None:
            # The start of the reference day: as_of must never claim more freshness
            # than the bank vouched for.
            day = parse_day(raw["referenceDate"], f"{where}.referenceDate")
            when = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            when = fetched_at
        included = opt_bool(raw, "creditLimitIncluded", where)
        return cls(text(raw, "balanceType", where), amount, currency, when, included)


def _pick(entries: list[_Entry], types: tuple[str, ...], *, with_limit: bool) -> _Entry | None:
    for balance_type in types:
        matching = [e for e in entries if e.type == balance_type]
        if matching:
            # Prefer the variant that counts the credit line in for "available" and the
            # one that leaves it out for "current"; then the freshest.
            return max(matching, key=lambda e: (bool(e.limit_included) == with_limit, e.when))
    return None


def _credit_limit(entries: list[_Entry]) -> Decimal | None:
    for balance_type in _AVAILABLE_TYPES + _CURRENT_TYPES:
        same = [e for e in entries if e.type == balance_type]
        including = [e for e in same if e.limit_included is True]
        excluding = [e for e in same if e.limit_included is False]
        if including and excluding:
            return including[0].amount - excluding[0].amount
    return None


def _balance(account_id: str, currency: str, entries: list[_Entry]) -> Balance:
    current = _pick(entries, _CURRENT_TYPES, with_limit=False)
    if current is None:
        types = sorted({e.type for e in entries})
        raise BankProtocolError(f"no booked balance in {currency} among types {types}")
    available = _pick(entries, _AVAILABLE_TYPES, with_limit=True)
    return Balance(
        bank_account_id=account_id,
        current=current.amount,
        available=None if available is None else available.amount,
        credit_limit=_credit_limit(entries),
        currency=currency,
        as_of=current.when,
    )
