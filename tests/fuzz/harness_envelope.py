#!/usr/bin/env python3
"""Fuzz the envelope blob parser: arbitrary bytes in, a value or a :class:`BlobError` out.

Contract: :func:`vault.envelope.parse_header`, :func:`~vault.envelope.data_key_id` and
:meth:`vault.Envelope.open` raise nothing but :class:`vault.errors.BlobError` for any
bytes, and only a blob this key sealed ever opens (AES-GCM plus the key commitment: a
forged or altered blob must never yield a plaintext).

The data key is fixed so the committed seeds (``corpus/envelope``, made by
``make_seeds.py``) open and coverage starts past the header check: a throw-away local
keyring holds a test-only KEK, and the wrapped data key below was wrapped under it by
:class:`vault.LocalKeyring` itself. Run by hand::

    python tests/fuzz/harness_envelope.py tests/fuzz/corpus/envelope -max_total_time=600
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["vault"]):
    from vault import Envelope, LocalKeyringConfig, WrappedKey
    from vault.envelope import TAG_SIZE, data_key_id, parse_header
    from vault.errors import BlobError
    from vault.local import LocalKeyring

#: Test-only key material: it protects nothing but the fuzz seeds.
KEK = bytes.fromhex("9f1c2a6b4e3d8f7a0b5c6d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a")
DEK_ID = "dek_usr_eu_fuzz"
WRAPPED_DEK = bytes.fromhex(
    "0b4df2a23a4481cfbd1022be53b07b67d5912656cfd28fd0e8c8faea2d8293c5"
    "156859c16a74b12bb7b431d8a192a483686faa5507f64f6cbc10d04b"
)
AAD = b"credentials|refresh_token_sealed|crd_eu_fuzz|usr_eu_fuzz|eu"
PLAINTEXT = b"rt-fuzz-refresh-token"


def keyring() -> LocalKeyring:
    """A local keyring in a fresh private directory holding :data:`KEK` as version 1."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-keys-"))
    os.chmod(root, 0o700)
    (root / "fuzz").mkdir(mode=0o700)
    key_file = root / "fuzz" / "v1.key"
    key_file.write_bytes(KEK)
    os.chmod(key_file, 0o600)
    provider = LocalKeyring(LocalKeyringConfig(root, "fuzz"))
    provider.ensure_kek()
    return provider


PROVIDER = keyring()
ENVELOPE = Envelope(PROVIDER)
KEY = WrappedKey(DEK_ID, PROVIDER.kind, PROVIDER.kek_id, 1, WRAPPED_DEK)


def test_one_input(data: bytes) -> None:
    try:
        header = parse_header(data)
    except BlobError:
        header = None
    if header is not None:
        assert header.header_len + TAG_SIZE <= len(data)
        assert 0 < len(header.dek_id) < 256
        assert header.dek_id.isascii()
        assert data_key_id(data) == header.dek_id
    try:
        opened = ENVELOPE.open(KEY, data, AAD)
    except BlobError:
        return
    assert opened == PLAINTEXT, "a blob this key never sealed was opened"


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
