"""Strict JSON for unauthenticated input: I-JSON (RFC 7493) with size and depth bounds.

The JWS protected header and claims of ``Plaid-Verification`` are read before anything
is authenticated, and the webhook body right after; each goes through :func:`loads`:

- at most ``max_bytes`` bytes and ``max_depth`` nested arrays/objects, both checked
  *before* the parser runs (CPython's decoder recurses per level: a header nested a
  thousand deep raised ``RecursionError``, a 500, instead of a refusal);
- UTF-8 only (RFC 7493 §2.1, RFC 8259 §8.1);
- no lone surrogate escapes such as ``"\\ud800"`` (RFC 7493 §2.1: strings "MUST NOT
  include code points that identify Surrogates"); stdlib ``json`` accepts them and the
  string then fails later, on the first UTF-8 encode (a 500 on insert);
- no ``NaN``, ``Infinity`` or ``-Infinity`` (not JSON at all, RFC 8259 §6; stdlib
  ``json`` accepts them by default);
- no duplicate member names (RFC 7493 §2.3; RFC 7515 §4 lets a JWS parser refuse
  duplicate header parameters, which defeats "the last ``alg`` wins" confusions).

Every refusal is a :class:`ValueError` whose message names the rule, never the input.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "loads"]

#: Nesting allowed by default: Plaid's bodies are 3 levels deep at most.
MAX_DEPTH = 16
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
# An escaped surrogate half, and a correctly paired high + low one.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_ESCAPED_BACKSLASH = re.compile(rb"\\\\")


def _refuse_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_unique)


def _too_deep(data: bytes, limit: int) -> bool:
    """Whether ``data``'s arrays and objects nest deeper than ``limit``, brackets inside
    strings ignored.

    With no more opening brackets than ``limit`` anywhere (strings included) nothing can
    nest deeper, and the scan below is skipped: a Plaid body or a JOSE header has one or
    two, and the scan was a third of :func:`loads` (bench/README.md, webhook row).
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b'""', data)):
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _lone_surrogate(data: bytes) -> bool:
    if b"\\u" not in data:
        return False
    # "\\ud800" is a backslash followed by text, not an escape: drop escaped backslashes
    # first, then paired surrogates; any surrogate escape left is a lone one.
    plain = _ESCAPED_BACKSLASH.sub(b"", data)
    return _SURROGATE.search(_PAIR.sub(b"", plain)) is not None


def loads(data: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """The value ``data`` holds, or :class:`ValueError` if it breaks a rule above."""
    if len(data) > max_bytes:
        raise ValueError("JSON text too large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("JSON text is not UTF-8") from None
    if _too_deep(data, max_depth):
        raise ValueError("JSON nested too deep")
    if _lone_surrogate(data):
        raise ValueError("lone surrogate in a JSON string")
    try:
        return _DECODER.decode(text)
    except RecursionError:  # unreachable after the depth check; kept as a last guard
        raise ValueError("JSON nested too deep") from None
