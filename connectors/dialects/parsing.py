"""Strict readers for bank JSON, shared by the dialects.

Every reader takes a ``where`` path (``Data.Transaction[3].Amount``) and raises
:class:`~connectors.errors.BankProtocolError` naming that path, never the value: values
are account numbers, names and amounts, and error messages get logged as they are.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from connectors.errors import BankProtocolError
from connectors.models import Transaction, TransactionStatus

JsonObject = Mapping[str, object]

MASK = "••••"

# Generous enough for OBIE (13.5 digits, unsigned) and Berlin Group (14.3, signed) alike;
# exponents, separators, "NaN" and "Infinity" never match.
_AMOUNT = re.compile(r"(-?)([0-9]{1,18})(\.[0-9]{1,8})?")  # [0-9]: \d admits other scripts
_CURRENCY = re.compile(r"[A-Z]{3}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def obj(value: object, where: str) -> JsonObject:
    if not isinstance(value, Mapping):
        raise BankProtocolError(f"{where}: expected a JSON object")
    return value


def opt_obj(container: JsonObject, key: str, where: str) -> JsonObject | None:
    value = container.get(key)
    return None if value is None else obj(value, f"{where}.{key}")


def array(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise BankProtocolError(f"{where}: expected a JSON array")
    return value


def opt_array(container: JsonObject, key: str, where: str) -> list[object]:
    value = container.get(key)
    return [] if value is None else array(value, f"{where}.{key}")


def opt_text(container: JsonObject, key: str, where: str) -> str | None:
    """Read an optional string; blank strings count as absent, as banks send them so."""
    value = container.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BankProtocolError(f"{where}.{key}: expected a string")
    return value.strip() or None


def text(container: JsonObject, key: str, where: str) -> str:
    value = opt_text(container, key, where)
    if value is None:
        raise BankProtocolError(f"{where}.{key}: required string is missing")
    return value


def opt_bool(container: JsonObject, key: str, where: str) -> bool | None:
    value = container.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise BankProtocolError(f"{where}.{key}: expected a boolean")


def parse_amount(value: object, where: str, *, signed: bool) -> Decimal:
    """Parse a decimal amount string exactly.

    Both specifications carry amounts as strings so no party rounds them through binary
    floating point; a JSON number here means the bank (or a proxy) already did, so it is
    refused rather than guessed at. ``signed=False`` also refuses a sign, for dialects
    whose direction lives in a separate indicator.
    """
    if not isinstance(value, str):
        raise BankProtocolError(f"{where}: amount must be a decimal string, not a JSON number")
    match = _AMOUNT.fullmatch(value)
    if match is None or (match.group(1) and not signed):
        raise BankProtocolError(f"{where}: malformed amount")
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:  # unreachable given the pattern; kept as a seatbelt
        raise BankProtocolError(f"{where}: malformed amount") from exc
    return amount if amount else amount.copy_abs()  # "-0.00" is just zero


def with_sign(amount: Decimal, *, negative: bool) -> Decimal:
    return -amount if negative and amount else amount


def parse_currency(value: object, where: str) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise BankProtocolError(f"{where}: expected an ISO 4217 currency code")
    return value


def parse_instant(value: object, where: str) -> datetime:
    """Parse an ISO 8601 date-time that carries its offset, returned in UTC.

    OBIE v3.1 requires the offset on every response date-time; without it the instant is
    ambiguous by up to a day, so it is refused instead of assumed to be UTC.
    """
    if not isinstance(value, str):
        raise BankProtocolError(f"{where}: expected an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BankProtocolError(f"{where}: malformed ISO 8601 date-time") from exc
    if parsed.utcoffset() is None:
        raise BankProtocolError(f"{where}: date-time has no UTC offset")
    return parsed.astimezone(UTC)


def parse_day(value: object, where: str) -> date:
    """Parse an ISO date, or a date-time with offset normalized to its UTC day."""
    if isinstance(value, str) and _DAY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise BankProtocolError(f"{where}: malformed ISO 8601 date") from exc
    return parse_instant(value, where).date()


def mask(identifier: str) -> str:
    """Keep the last four letters or digits: enough for a user to tell accounts apart."""
    tail = "".join(ch for ch in identifier if ch.isalnum())[-4:]
    return MASK + tail


def synthetic_id(*parts: str) -> str:
    """Derive a stable id for an entry the bank sent without one.

    Built only from non-PII fields so the id can be stored in clear. Two genuinely
    identical entries (same account, instant, amount and status) collapse into one.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"syn-{digest[:32]}"


def dedupe(transactions: Iterable[Transaction]) -> list[Transaction]:
    """Keep one entry per bank id, in first-seen order.

    Banks repeat entries across pages when new ones arrive mid-paging. When the same id
    appears both pending and booked (the bank kept the id), the booked entry wins.
    """
    kept: dict[str, Transaction] = {}
    for txn in transactions:
        seen = kept.get(txn.bank_transaction_id)
        if seen is None or (
            seen.status is TransactionStatus.PENDING and txn.status is TransactionStatus.BOOKED
        ):
            kept[txn.bank_transaction_id] = txn
    return list(kept.values())
