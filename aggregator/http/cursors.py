"""Opaque cursors: positions in a list, bound to the resource they were issued for.

A cursor is base64url text of ``v1|<resource id>|<position…>``. It is not secret and
not signed: every query it feeds is already restricted to what the caller may see, so a
hand-made cursor can only move the caller around its own data. Binding it to the
resource makes a cursor of one account or connection fail loudly (422) on another
instead of silently skipping rows. Clients must treat it as opaque; the format may
change with the version tag.
"""

from __future__ import annotations

import base64
import binascii

from aggregator.http.problems import InvalidCursor

_VERSION = "v1"


def encode_cursor(resource_id: str, *position: str) -> str:
    text = "|".join((_VERSION, resource_id, *position))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, resource_id: str, parts: int) -> list[str]:
    """The ``parts`` position fields of ``cursor``; raises :class:`InvalidCursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("the cursor does not decode") from None
    fields = raw.split("|")
    if len(fields) != parts + 2 or fields[0] != _VERSION:
        raise InvalidCursor("the cursor does not decode")
    if fields[1] != resource_id:
        raise InvalidCursor("the cursor was issued for another resource")
    return fields[2:]
