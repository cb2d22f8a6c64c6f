"""The normalized account data every dialect maps a bank's JSON to.

The aggregator stores and serves these values without knowing which API a bank speaks, so
each field has one meaning across dialects:

- Money is :class:`~decimal.Decimal` with its ISO 4217 currency, never ``float``.
- Signs follow the account holder: a negative amount is money leaving the account (or,
  for a balance, money the holder owes); a positive amount is money coming in.
- Instants are timezone-aware UTC; calendar days are the UTC day of the bank's instant.
- Fields the design classifies as PII (account identifiers, holder names, transaction
  descriptions and counterparties) are left out of ``repr`` so a logged model or a
  traceback never carries them; the store seals them under the user's data key.

The constructors check these invariants and raise ``TypeError``/``ValueError``: reaching
them is a bug in a dialect, which must reject a malformed bank answer with
:class:`~connectors.errors.BankProtocolError` before building a model.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

__all__ = ["Account", "AccountType", "Balance", "Transaction", "TransactionStatus"]

_CURRENCY = re.compile(r"[A-Z]{3}")


class AccountType(enum.Enum):
    """What the account is for, coarse enough that every bank's taxonomy maps onto it."""

    CHECKING = "checking"  # current/payment account used for day-to-day spending
    SAVINGS = "savings"  # deposit account, possibly with notice or limited withdrawals
    CREDIT_CARD = "credit_card"  # revolving card credit; balances are usually negative
    LOAN = "loan"  # instalment credit, mortgages included; balance is what is owed
    OTHER = "other"  # e-money, prepaid cards and anything the bank does not classify


class TransactionStatus(enum.Enum):
    """Whether the bank has posted the entry; pending entries may vanish or change id."""

    BOOKED = "booked"  # posted to the ledger; amount and id are final
    PENDING = "pending"  # authorised but not posted; may be replaced by a booked entry


def _check_money(name: str, value: Decimal | None) -> None:
    if value is None:
        return
    if not isinstance(value, Decimal):  # a float would silently lose cents
        raise TypeError(f"{name} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{name} must be finite")


def _check_currency(value: str) -> None:
    if not _CURRENCY.fullmatch(value):
        raise ValueError("currency must be an ISO 4217 alphabetic code")


@dataclass(frozen=True, slots=True)
class Account:
    """One account the user granted access to.

    ``identifier`` is the full account number as the bank gives it (IBAN, sort code and
    account number run together, BBAN); a card's number is kept masked (PCI DSS) so
    ``identifier`` and ``masked_identifier`` then agree. Both are ``None`` when the consent
    does not cover account details (OBIE ``ReadAccountsBasic``).

    >>> acct = Account("a1", "Bills", AccountType.CHECKING, "GBP", "••••3345", "80200110203345")
    >>> "80200110203345" in repr(acct)
    False
    """

    bank_account_id: str
    name: str
    type: AccountType
    currency: str
    masked_identifier: str | None
    identifier: str | None = field(repr=False)
    holder_name: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_currency(self.currency)


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance in one currency at ``as_of``.

    ``current`` is the booked balance; ``available`` is what the holder can spend now,
    including any credit line the bank counts in; ``credit_limit`` is that credit line
    when the bank reports it. A card with 1,230 owed on a 5,000 limit reads
    ``current=-1230``, ``available=3770``, ``credit_limit=5000``.
    """

    bank_account_id: str
    current: Decimal
    available: Decimal | None
    credit_limit: Decimal | None
    currency: str
    as_of: datetime

    def __post_init__(self) -> None:
        _check_money("current", self.current)
        _check_money("available", self.available)
        _check_money("credit_limit", self.credit_limit)
        _check_currency(self.currency)
        if self.as_of.utcoffset() != timedelta(0):
            raise ValueError("as_of must be timezone-aware UTC")
        if self.as_of.tzinfo is not UTC:
            object.__setattr__(self, "as_of", self.as_of.astimezone(UTC))


@dataclass(frozen=True, slots=True)
class Transaction:
    """One entry on an account's statement.

    ``amount`` is signed from the holder's side: negative is money leaving the account
    (a card purchase, a direct debit), positive is money coming in (salary, a refund).

    ``booked_date`` is the UTC day the bank posted the entry; for a pending entry it is the
    bank's expected booking day when it gives one (OBIE always does). A pending entry is
    usually replaced by a booked one with a new ``bank_transaction_id``; a bank that links
    the two fills ``pending_transaction_id`` on the booked entry, most banks do not, and
    the sync layer then retires pending entries the bank stops reporting.
    """

    bank_transaction_id: str
    bank_account_id: str
    amount: Decimal
    currency: str
    booked_date: date | None
    value_date: date | None
    status: TransactionStatus
    description: str = field(repr=False)
    counterparty: str | None = field(default=None, repr=False)
    merchant_category: str | None = None
    pending_transaction_id: str | None = None

    def __post_init__(self) -> None:
        _check_money("amount", self.amount)
        _check_currency(self.currency)
        for name in ("booked_date", "value_date"):
            if isinstance(getattr(self, name), datetime):  # datetime is a date subclass
                raise TypeError(f"{name} must be a date, not a datetime")
