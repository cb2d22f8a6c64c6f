"""The normalized model's invariants (``connectors/models.py``): PII out of reprs, exact money,
UTC times. Lives beside the dialect tests because the dialects are its only producers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connectors.models import Account, AccountType, Balance, Transaction, TransactionStatus

AS_OF = datetime(2024, 3, 14, 9, 30, tzinfo=UTC)


def test_reprs_never_show_identifiers_names_or_descriptions() -> None:
    account = Account(
        "acc-1", "Bills", AccountType.CHECKING, "GBP", "••••3345", "80200110203345", "Kevin Ex"
    )
    txn = Transaction(
        "t1", "acc-1", Decimal("-1.00"), "GBP", None, None, TransactionStatus.BOOKED,
        "RENT FLAT 4B", "Landlord Jones",
    )  # fmt: skip

    text = repr(account) + str(account) + repr(txn) + str(txn)
    for secret in ("80200110203345", "Kevin Ex", "RENT FLAT 4B", "Landlord Jones"):
        assert secret not in text
    assert "••••3345" in text


@pytest.mark.parametrize("field", ["current", "available", "credit_limit"])
def test_balance_money_must_be_decimal(field: str) -> None:
    values: dict[str, object] = {
        "current": Decimal("1"),
        "available": None,
        "credit_limit": None,
        field: 1.0,
    }
    with pytest.raises(TypeError, match=f"{field} must be a Decimal"):
        Balance("a", currency="GBP", as_of=AS_OF, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_amounts_must_be_finite(value: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        Transaction("t", "a", Decimal(value), "EUR", None, None, TransactionStatus.PENDING, "d")


def test_balance_time_must_be_aware_utc_and_is_normalized() -> None:
    with pytest.raises(ValueError, match="UTC"):
        Balance("a", Decimal(1), None, None, "GBP", datetime(2024, 3, 14, 9, 30))
    with pytest.raises(ValueError, match="UTC"):
        Balance("a", Decimal(1), None, None, "GBP", AS_OF.astimezone(timezone(timedelta(hours=1))))
    other_utc = AS_OF.replace(tzinfo=timezone(timedelta(0)))
    assert Balance("a", Decimal(1), None, None, "GBP", other_utc).as_of.tzinfo is UTC


@pytest.mark.parametrize("currency", ["gbp", "GB", "EURO", "€"])
def test_currency_must_be_an_iso_4217_code(currency: str) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Account("a", "n", AccountType.OTHER, currency, None, None)


def test_transaction_dates_are_dates_not_datetimes() -> None:
    with pytest.raises(TypeError, match="booked_date"):
        Transaction("t", "a", Decimal(1), "EUR", AS_OF, None, TransactionStatus.BOOKED, "d")
    assert Transaction(
        "t", "a", Decimal(1), "EUR", date(2024, 3, 1), None, TransactionStatus.BOOKED, "d"
    ).booked_date == date(2024, 3, 1)


def test_models_are_frozen() -> None:
    account = Account("a", "n", AccountType.OTHER, "EUR", None, None)
    with pytest.raises(AttributeError):
        account.name = "other"  # type: ignore[misc]
