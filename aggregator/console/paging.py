"""Keyset paging of the console's lists: one position per region, never ``OFFSET``.

A list page reads each region from its own store (never two regions in one query) and
shows up to :data:`PAGE` rows of each. Its "next page" link carries an opaque cursor:
base64url of JSON naming the list and, per region, where to go on: ``[]`` from the top,
the sort key of the last row shown (``["2026-12-06T10:00:00+00:00", "con_eu_…"]``), or
``null`` once the region has nothing more. Each region's next query continues strictly
after its own position (``WHERE (created_at, id) < (…)``), so rows arriving meanwhile
never shift a page, and a region that was down keeps its position for the next page.

The cursor is not secret and not signed: every query it feeds is already limited to
what the operator may see, so a hand-made cursor can only move the operator around.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from starlette.requests import Request

PAGE = 200  # rows per region on one page
_MAX_CURSOR = 2048
#: Per region: ``[]`` from the top, a sort key to continue after, or None when done.
Position = list[str] | None


class BadCursor(ValueError):
    """The ``cursor`` query parameter does not decode, or was made for another list."""


def encode(name: str, positions: Mapping[str, Position]) -> str:
    raw = json.dumps({"v": 1, "list": name, "at": dict(positions)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str, name: str, regions: Sequence[str]) -> dict[str, Position]:
    """Each region's position from ``cursor``; a region it omits is done."""
    if len(cursor) > _MAX_CURSOR:
        raise BadCursor("too long")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor("does not decode") from None
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("list") != name:
        raise BadCursor("not a cursor of this list")
    at = data.get("at")
    if not isinstance(at, dict):
        raise BadCursor("no positions")
    out: dict[str, Position] = {}
    for region in regions:
        found = at.get(region)
        if found is not None and not (isinstance(found, list)
                                      and all(isinstance(p, str) for p in found)):
            raise BadCursor("a position is malformed")
        out[region] = found
    return out


def read(request: Request, name: str, regions: Sequence[str]) -> dict[str, Position]:
    """The request's positions: every region from the top without a cursor."""
    cursor = request.query_params.get("cursor")
    if not cursor:
        return {region: [] for region in regions}
    return decode(cursor, name, regions)


def at_time(position: list[str]) -> datetime:
    """A position's leading instant; :class:`BadCursor` if it is not one."""
    try:
        found = datetime.fromisoformat(position[0])
    except (IndexError, ValueError):
        raise BadCursor("a position is malformed") from None
    if found.tzinfo is None:
        raise BadCursor("a position is malformed")
    return found


def at_int(position: list[str]) -> int:
    try:
        return int(position[0])
    except (IndexError, ValueError):
        raise BadCursor("a position is malformed") from None


@dataclass
class Paged:
    """What the page shows of one list: rows per region and the link to the next page."""

    next_url: str | None
    first_url: str | None


def links(request: Request, name: str, positions: Mapping[str, Position]) -> Paged:
    """The next page's link (None once every region is done) and, past the first page,
    a link back to it; both keep the page's other query parameters."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    base = request.url.path
    first = f"{base}?{urlencode(kept)}" if kept else base
    on_first = not request.query_params.get("cursor")
    if all(p is None for p in positions.values()):
        return Paged(None, None if on_first else first)
    query = urlencode([*kept, ("cursor", encode(name, positions))])
    return Paged(f"{base}?{query}", None if on_first else first)
