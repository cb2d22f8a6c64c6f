"""RFC 9207 §2.4: the iss check against mix-up attacks."""

from __future__ import annotations

import pytest

from connectors import IssuerMismatch, check_issuer

ISSUER = "https://bank.test"


@pytest.mark.parametrize(
    ("iss", "supported"),
    [(ISSUER, True), (ISSUER, False), (None, False)],
)
def test_accepted(iss: str | None, supported: bool) -> None:
    check_issuer(iss, ISSUER, iss_supported=supported)


@pytest.mark.parametrize(
    ("iss", "supported"),
    [
        ("https://attacker.test", True),
        ("https://attacker.test", False),  # present: compared even if never advertised
        (ISSUER + "/", True),  # no normalisation
        ("https://BANK.test", True),
        ("", False),
        (None, True),  # advertised but stripped
    ],
)
def test_rejected(iss: str | None, supported: bool) -> None:
    with pytest.raises(IssuerMismatch):
        check_issuer(iss, ISSUER, iss_supported=supported)
