"""Column types that keep money exact and instants aware on SQLite as on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Numeric
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Money is stored with 4 fractional digits: every ISO 4217 currency has at most 4 minor
#: unit digits (CLF has 4, BHD/KWD/OMR 3), and 16 integer digits cover any balance. One
#: scale for all currencies keeps columns comparable; amounts never get rounded here.
MONEY_PRECISION = 20
MONEY_SCALE = 4
_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
_LIMIT = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware instant, stored as UTC and returned as UTC.

    PostgreSQL keeps ``timestamptz`` natively; SQLite has no such type, so the value is
    stored as naive UTC text and made aware again on the way out. Naive datetimes are
    refused on the way in: guessing their zone is how off-by-hours bugs start.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """An exact amount: ``NUMERIC(20, 4)`` on PostgreSQL, scaled integer on SQLite.

    SQLite's NUMERIC affinity stores a REAL (a binary float), which silently loses digits
    past the 15th; a 64-bit integer of ten-thousandths stays exact, sortable and
    summable in SQL, up to ±922,337,203,685,477.5807 (larger amounts are refused there).
    Floats are refused, as are values with more than four fractional digits (rounding
    money is the caller's decision, never the store's).
    """

    impl = Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"money must be a Decimal, not {type(value).__name__}")
        amount = Decimal(value)
        if not amount.is_finite():
            raise ValueError("money amount is not finite")
        try:
            exact = amount.quantize(_QUANTUM)
        except InvalidOperation:
            raise ValueError("money amount is too large") from None
        if exact != amount:
            raise ValueError(f"money has more than {MONEY_SCALE} fractional digits")
        if abs(exact) >= _LIMIT:
            raise ValueError(f"money exceeds {MONEY_PRECISION - MONEY_SCALE} integer digits")
        if dialect.name == "sqlite":
            scaled = int(exact.scaleb(MONEY_SCALE))
            if not -(2**63) <= scaled < 2**63:
                raise ValueError("money exceeds the range SQLite stores exactly")
            return scaled
        return exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_SCALE)
        return Decimal(value).quantize(_QUANTUM)
