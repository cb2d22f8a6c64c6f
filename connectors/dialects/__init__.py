"""API dialects: one class per family of bank account-information APIs.

A bank profile names its dialect (``dialect = "obie"``); :func:`get_dialect` turns the
name into the class, and the profile loader can check names against :data:`DIALECTS`
at start-up instead of at a user's first sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .base import DEFAULT_MAX_PAGES, Dialect, HttpDialect, parse_retry_after
from .berlin_group import BerlinGroupDialect
from .obie import ObieDialect

__all__ = [
    "DEFAULT_MAX_PAGES",
    "DIALECTS",
    "BerlinGroupDialect",
    "Dialect",
    "HttpDialect",
    "ObieDialect",
    "get_dialect",
    "parse_retry_after",
]

DIALECTS: Mapping[str, type[Dialect]] = MappingProxyType(
    {cls.name: cls for cls in (ObieDialect, BerlinGroupDialect)}
)


def get_dialect(name: str) -> type[Dialect]:
    """Return the dialect class a profile names; ``KeyError`` lists the known names."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise KeyError(f"unknown API dialect {name!r}; known: {sorted(DIALECTS)}") from None
