"""Validators shared by the sections: each refuses with the file key or variable at fault."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from ipaddress import ip_address
from typing import Any

from aggregator.errors import ConfigError

#: A duration: a whole number of hours, days or weeks ("90d").
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def mapping(value: Any, source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {where} must be a table")
    return value


def number(value: Any, source: str, where: str) -> float:
    """A positive finite int or float; a bool is refused (TOML ``true`` is not 1 second)."""
    if not positive(value):
        raise ConfigError(f"{source}: {where} must be a positive number")
    return float(value)


def positive(value: Any) -> bool:
    """True for a finite number above zero: TOML's ``nan`` and ``inf`` are not timeouts."""
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value) and value > 0)


def days(value: Any, where: str, *, maximum: int) -> int:
    """A whole number of days, 1..``maximum`` (the file must hold a number, not text)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(f"{where} must be a whole number of days from 1 to {maximum}, "
                          f"not {value!r}")
    return value


def duration(value: Any, where: str) -> timedelta | None:
    """A strict duration: "90d", "12h", "2w", or "off" (None: never)."""
    if value is None or value == "off":
        return None
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f"{where}: {value!r} is not a duration; write a whole number of hours, days "
            'or weeks such as "90d", "36h", "2w", or "off"'
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def reject_unknown(raw: Mapping[str, Any], known: frozenset[str], source: str, where: str
                   ) -> None:
    """Refuse a key we do not read: a typo must not leave a default silently in force."""
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting {where}{unknown[0]}; expected one of: "
            + ", ".join(sorted(known))
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
