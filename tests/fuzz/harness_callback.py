#!/usr/bin/env python3
"""Fuzz the OAuth callback's query handling: arbitrary query strings, typed refusals only.

Input: the raw query string of ``GET /link/callback``, parsed exactly as the route parses
it (Starlette's ``QueryParams``, then ``dict``). Then what the gateway does with it
before any I/O: :func:`aggregator.ids.parse_secret` on ``state`` (the region it names,
:meth:`aggregator.link.flow.LinkFlow._find`), and :func:`connectors.parse_callback`
against a pending authorization whose ``state`` the seeds carry, for a bank that does
and one that does not advertise RFC 9207 ``iss``.

Contract: only :class:`~aggregator.errors.InvalidId` and
:class:`~connectors.ConnectorError` escape; a code is returned only when ``state``
matches, no ``error`` is present and ``iss`` is right (or absent where allowed); and no
message ever carries the authorization code. Run by hand::

    python tests/fuzz/harness_callback.py tests/fuzz/corpus/callback -max_total_time=600
"""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime, timedelta

import atheris

with atheris.instrument_imports(include=["aggregator.ids", "connectors", "starlette"]):
    from starlette.datastructures import QueryParams

    from aggregator.errors import InvalidId
    from aggregator.ids import parse_secret
    from connectors import ConnectorError, PendingAuthorization, ServerMetadata, parse_callback

REGIONS = ("eu", "us")
ISSUER = "https://auth.examplebank.de"
STATE = "sta_eu_om3nbg7n6p3v45h63lwfhuwm7n5hhqhrixoskkcgbvumg6dxltoa"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PENDING = PendingAuthorization(
    bank_id="examplebank-de", state=STATE, code_verifier="v" * 64, nonce=None,
    redirect_uri="https://gateway.example/link/callback", created_at=NOW - timedelta(minutes=1),
    expires_at=NOW + timedelta(minutes=9),
)
BANKS = tuple(
    ServerMetadata(issuer=ISSUER, authorization_endpoint=f"{ISSUER}/authorize",
                   token_endpoint=f"{ISSUER}/token", source="profile",
                   authorization_response_iss_parameter_supported=iss_supported)
    for iss_supported in (False, True)
)


def test_one_input(data: bytes) -> None:
    query = dict(QueryParams(data))
    state = query.get("state") or ""
    with contextlib.suppress(InvalidId):
        assert parse_secret(state, kind="sta", regions=REGIONS) in REGIONS
    for metadata in BANKS:
        try:
            code = parse_callback(PENDING, query, metadata, now=NOW)
        except ConnectorError as exc:
            _check_message(str(exc), query)
            continue
        assert code
        assert code == query.get("code")
        assert query.get("state") == STATE
        assert "error" not in query
        iss = query.get("iss")
        assert iss == ISSUER or (
            iss is None and not metadata.authorization_response_iss_parameter_supported
        )


def _check_message(message: str, query: dict[str, str]) -> None:
    # `iss` is quoted on purpose (an operator tells a mix-up from a typo by it); the
    # code may show up only where the sender also put it into another parameter.
    given = query.get("code", "")
    echoed = any(given in v for k, v in query.items() if k != "code")
    if len(given) >= 8 and not echoed:
        assert given not in message, "a message carries the authorization code"


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
