"""Plaid's JSON (as plaid-python's ``to_dict()``) mapped to :mod:`connectors.models`.

Sign convention. Plaid reports a transaction ``amount`` as positive when money *leaves*
the account (a purchase, a debit) and negative when it comes in (a refund, a deposit);
ours (:class:`~connectors.models.Transaction`) is the holder's side, so every Plaid
amount is negated here. Balances: Plaid's ``current`` on a ``credit`` or ``loan``
account is what the holder owes, as a positive number; ours is negative for money owed,
so those are negated too, while ``available`` (credit still available) and ``limit``
keep their sign. Depository balances need no flip.

plaid-python hands amounts over as ``float``; ``Decimal(repr(x))`` recovers the
shortest decimal that round-trips, which is the JSON text Plaid sent (two decimals).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from connectors.errors import BankProtocolError
from connectors.models import Account, AccountType, Balance, Transaction, TransactionStatus

__all__ = ["to_account", "to_balance", "to_transaction"]

_CURRENCY = re.compile(r"[A-Z]{3}")
_SAVINGS = frozenset({"savings", "money market", "cd", "hsa", "cash management"})
_OWED = frozenset({"credit", "loan"})


def _money(value: object, field: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise BankProtocolError(f"plaid: {field} is not a number")
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not amount.is_finite():
        raise BankProtocolError(f"plaid: {field} is not finite")
    return amount


def _currency(obj: Mapping[str, Any], field: str) -> str:
    code = obj.get("iso_currency_code") or obj.get("unofficial_currency_code")
    if not isinstance(code, str) or not _CURRENCY.fullmatch(code):
        raise BankProtocolError(f"plaid: {field} has no ISO 4217 currency")
    return code


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _type_of(account: Mapping[str, Any]) -> AccountType:
    kind, subtype = str(account.get("type") or ""), str(account.get("subtype") or "")
    if kind == "depository":
        if subtype in _SAVINGS:
            return AccountType.SAVINGS
        return AccountType.OTHER if subtype in {"prepaid", "paypal"} else AccountType.CHECKING
    if kind == "credit":
        return AccountType.CREDIT_CARD
    if kind == "loan":
        return AccountType.LOAN
    return AccountType.OTHER


def to_account(account: Mapping[str, Any]) -> Account:
    """An ``AccountBase`` as our account; Plaid gives only the mask, never the number."""
    account_id = _text(account, "account_id")
    if account_id is None:
        raise BankProtocolError("plaid: an account has no account_id")
    balances = account.get("balances") or {}
    mask = _text(account, "mask")
    return Account(
        bank_account_id=account_id,
        name=_text(account, "name") or _text(account, "official_name") or "Account",
        type=_type_of(account),
        currency=_currency(balances, "balances"),
        masked_identifier=f"••••{mask}" if mask else None,
        identifier=None,
    )


def to_balance(account: Mapping[str, Any], as_of: datetime | None = None) -> Balance | None:
    """The account's balance, or ``None`` when Plaid reports neither current nor available."""
    balances = account.get("balances") or {}
    current = _money(balances.get("current"), "balances.current")
    available = _money(balances.get("available"), "balances.available")
    if current is None and available is None:
        return None
    if current is not None and str(account.get("type")) in _OWED:
        current = -current  # Plaid: amount owed, positive; ours: negative
    return Balance(
        bank_account_id=str(account["account_id"]),
        current=current if current is not None else available,  # type: ignore[arg-type]
        available=available,
        credit_limit=_money(balances.get("limit"), "balances.limit"),
        currency=_currency(balances, "balances"),
        as_of=as_of or datetime.now(UTC),
    )


def _day(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise BankProtocolError("plaid: a transaction date is malformed") from None
    return None


def _category(txn: Mapping[str, Any]) -> str | None:
    pfc = txn.get("personal_finance_category")
    if isinstance(pfc, Mapping) and isinstance(pfc.get("detailed"), str):
        return str(pfc["detailed"])[:64]
    code = txn.get("merchant_category_code")
    return code[:64] if isinstance(code, str) and code else None


def _counterparty(txn: Mapping[str, Any]) -> str | None:
    if (name := _text(txn, "merchant_name")) is not None:
        return name
    parties = txn.get("counterparties")
    if isinstance(parties, list) and parties and isinstance(parties[0], Mapping):
        return _text(parties[0], "name")
    return None


def to_transaction(txn: Mapping[str, Any]) -> Transaction:
    """A Plaid transaction as ours; the amount is negated (see the module docstring)."""
    txn_id, account_id = _text(txn, "transaction_id"), _text(txn, "account_id")
    amount = _money(txn.get("amount"), "transaction.amount")
    if txn_id is None or account_id is None or amount is None:
        raise BankProtocolError("plaid: a transaction lacks its id, account or amount")
    pending = txn.get("pending") is True
    return Transaction(
        bank_transaction_id=txn_id,
        bank_account_id=account_id,
        amount=-amount,
        currency=_currency(txn, "transaction"),
        # Plaid's `date` is the posting day, or for a pending entry the day it occurred:
        # the best guess at the booking day our model asks for.
        booked_date=_day(txn.get("date")),
        value_date=_day(txn.get("authorized_date")),
        status=TransactionStatus.PENDING if pending else TransactionStatus.BOOKED,
        description=_text(txn, "original_description") or _text(txn, "name") or "",
        counterparty=_counterparty(txn),
        merchant_category=_category(txn),
        pending_transaction_id=_text(txn, "pending_transaction_id"),
    )
