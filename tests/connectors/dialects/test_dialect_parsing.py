"""Amount, sign, date and id rules shared by the dialects (``connectors/dialects/parsing.py``)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from connectors.dialects.parsing import (
    dedupe,
    mask,
    parse_amount,
    parse_day,
    parse_instant,
    with_sign,
)
from connectors.errors import BankProtocolError
from connectors.models import Transaction, TransactionStatus

# Amounts as both specifications allow them: up to 13 integer and 5 fraction digits.
amounts = st.decimals(
    min_value=Decimal("-9999999999999.99999"),
    max_value=Decimal("9999999999999.99999"),
    places=5,
    allow_nan=False,
    allow_infinity=False,
) | st.decimals(min_value=-(10**13) + 1, max_value=10**13 - 1, places=2)


@given(amounts)
def test_signed_amount_string_parses_to_the_same_decimal(value: Decimal) -> None:
    parsed = parse_amount(format(value, "f"), "x", signed=True)
    assert parsed == value
    assert parsed.as_tuple().exponent == value.as_tuple().exponent  # scale is kept


@given(amounts)
def test_unsigned_amount_with_debit_indicator_is_negative(value: Decimal) -> None:
    magnitude = format(abs(value), "f")
    is_debit = value < 0
    parsed = with_sign(parse_amount(magnitude, "x", signed=False), negative=is_debit)
    assert parsed == value
    assert not parsed.is_signed() or parsed != 0  # never a negative zero


@given(st.floats() | st.integers() | st.booleans() | st.none())
def test_json_numbers_are_never_amounts(value: object) -> None:
    with pytest.raises(BankProtocolError, match="decimal string"):
        parse_amount(value, "x", signed=True)


@given(st.text(max_size=30))
@example("NaN")
@example("-Infinity")
@example("1e3")
@example(" 1.00")
@example("1.00\n")
@example("+1.00")
@example("\u0661\u0662\u066b\u0665")  # Arabic-Indic "12.5": Decimal() accepts it
@example("1_000.00")
def test_any_text_is_an_exact_finite_amount_or_refused(value: str) -> None:
    try:
        parsed = parse_amount(value, "x", signed=True)
    except BankProtocolError:
        return
    assert parsed.is_finite()
    assert value.isascii()
    assert parsed == Decimal(value)


@pytest.mark.parametrize("value", ["12.30 ", "1e3", "NaN", "4111111111111111.1234567890"])
def test_refusal_names_the_path_not_the_value(value: str) -> None:
    with pytest.raises(BankProtocolError) as info:
        parse_amount(value, "booked[3].transactionAmount.amount", signed=True)
    assert str(info.value) == "booked[3].transactionAmount.amount: malformed amount"


@pytest.mark.parametrize("value", ["-1.00", "-0"])
def test_unsigned_amount_refuses_a_sign(value: str) -> None:
    with pytest.raises(BankProtocolError, match="malformed amount"):
        parse_amount(value, "Amount.Amount", signed=False)


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("2024-03-01", date(2024, 3, 1)),
        ("2024-03-01T00:30:00+01:00", date(2024, 2, 29)),
        ("2024-03-01T23:30:00-01:00", date(2024, 3, 2)),
        ("2024-03-01T12:00:00Z", date(2024, 3, 1)),
        ("2024-03-01T23:59:59.999999999+00:00", date(2024, 3, 1)),  # truncated, not rounded
        ("2024-03-01T12:00:00", None),  # no offset
        ("2024-02-30", None),
        ("01/03/2024", None),
    ],
)
def test_days_are_utc_days_of_offset_instants(value: str, day: date | None) -> None:
    if day is None:
        with pytest.raises(BankProtocolError, match="BookingDateTime"):
            parse_day(value, "BookingDateTime")
    else:
        assert parse_day(value, "BookingDateTime") == day


def test_instants_are_returned_in_utc() -> None:
    instant = parse_instant("2024-03-14T10:30:35.035+01:00", "t")
    assert instant.isoformat() == "2024-03-14T09:30:35.035000+00:00"


@pytest.mark.parametrize(
    ("identifier", "masked"),
    [
        ("80200110203345", "••••3345"),
        ("GB29NWBK60161331926819", "••••6819"),
        ("525412******3241", "••••3241"),
        ("12", "••••12"),
    ],
)
def test_mask_keeps_the_last_four_characters(identifier: str, masked: str) -> None:
    assert mask(identifier) == masked


def _txn(txn_id: str, status: TransactionStatus, amount: str = "-1.00") -> Transaction:
    return Transaction(txn_id, "a", Decimal(amount), "EUR", None, None, status, "d")


def test_dedupe_keeps_first_seen_order_and_prefers_booked() -> None:
    booked, pending = TransactionStatus.BOOKED, TransactionStatus.PENDING
    got = dedupe(
        [
            _txn("a", pending),
            _txn("b", booked),
            _txn("a", booked, "-1.05"),
            _txn("b", booked, "-9.99"),  # a repeat never overrides what was seen first
            _txn("a", pending),
        ]
    )
    assert [(t.bank_transaction_id, t.status, t.amount) for t in got] == [
        ("a", booked, Decimal("-1.05")),
        ("b", booked, Decimal("-1.00")),
    ]
