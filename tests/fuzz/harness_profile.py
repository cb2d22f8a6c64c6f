#!/usr/bin/env python3
"""Fuzz the bank-profile loader: arbitrary file bytes in, a profile or a ProfileError out.

Contract: :func:`connectors.load_profiles` on a directory holding one ``*.toml`` file
returns exactly one :class:`~connectors.BankProfile`, whose fields hold what the
loader promises (ids and scopes by their patterns, a client secret only by name, a
literal development secret only for a loopback issuer), or raises
:class:`~connectors.errors.ProfileError` naming that file. Nothing else escapes: an
operator's typo must become a message naming the file and key, never a traceback.

Run by hand::

    python tests/fuzz/harness_profile.py tests/fuzz/corpus/profile -max_total_time=600
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["connectors", "tomllib"]):
    from connectors import BankProfile, ProfileError, load_profiles
    from connectors._schema import BANK_ID, COUNTRY, SCOPE_TOKEN, is_loopback_url

DIRECTORY = Path(tempfile.mkdtemp(prefix="fuzz-profile-"))
FILE = DIRECTORY / "bank.toml"
(DIRECTORY / "logo.svg").write_text("<svg/>")  # a file a profile may name


def test_one_input(data: bytes) -> None:
    FILE.write_bytes(data)
    try:
        profiles = load_profiles([DIRECTORY], include_builtin=False)
    except ProfileError as exc:
        refused: ProfileError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.file.startswith(str(FILE)), refused.file
        return
    (profile,) = profiles.values()
    assert isinstance(profile, BankProfile)
    assert BANK_ID.fullmatch(profile.id)
    assert COUNTRY.fullmatch(profile.country)
    assert profile.scopes
    assert all(SCOPE_TOKEN.fullmatch(s) for s in profile.scopes)
    assert profile.client_secret_dev_default is None or is_loopback_url(profile.issuer)
    assert profile.dev_private_key is None or is_loopback_url(profile.issuer)
    assert profile.source == FILE


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
