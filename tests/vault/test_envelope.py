"""Properties of the sealed-blob format (vault/envelope.py), on the local keyring."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import (
    AadMismatch,
    BlobError,
    Envelope,
    KekVersionRetired,
    LocalKeyringConfig,
    SealLimitReached,
    TamperedBlob,
    UnknownFormatVersion,
    WrongDataKey,
    data_key_id,
    open_provider,
)
from vault.envelope import NONCE_SIZE, parse_header

_KEYS_DIR = Path(tempfile.mkdtemp(prefix="envelope-test-"))


def _envelope(kek_id: str = "eu", **kwargs: object) -> Envelope:
    provider = open_provider(LocalKeyringConfig(directory=_KEYS_DIR, kek_id=kek_id))
    provider.ensure_kek()
    return Envelope(provider, **kwargs)  # type: ignore[arg-type]


ENV = _envelope()
ALICE = ENV.new_data_key("dek_usr_eu_alice")
BOB = ENV.new_data_key("dek_usr_eu_bob")
AAD = b"credentials|refresh_token|crd_eu_1|usr_eu_alice|eu"

payloads = st.binary(min_size=0, max_size=512)
aads = st.binary(min_size=0, max_size=128)


@given(payloads, aads)
def test_round_trip(plaintext: bytes, aad: bytes) -> None:
    blob = ENV.seal(ALICE, plaintext, aad)
    assert ENV.open(ALICE, blob, aad) == plaintext
    assert data_key_id(blob) == ALICE.dek_id


@given(payloads, st.data())
def test_any_flipped_bit_fails(plaintext: bytes, data: st.DataObject) -> None:
    blob = bytearray(ENV.seal(ALICE, plaintext, AAD))
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(BlobError):
        ENV.open(ALICE, bytes(blob), AAD)


@given(payloads, st.data())
def test_truncation_fails(plaintext: bytes, data: st.DataObject) -> None:
    blob = ENV.seal(ALICE, plaintext, AAD)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(TamperedBlob):
        ENV.open(ALICE, blob[:cut], AAD)


@given(payloads, st.binary(min_size=1, max_size=64))
def test_extension_fails(plaintext: bytes, tail: bytes) -> None:
    blob = ENV.seal(ALICE, plaintext, AAD)
    with pytest.raises(TamperedBlob):
        ENV.open(ALICE, blob + tail, AAD)


@given(payloads, aads, aads)
def test_blob_sealed_for_one_place_fails_in_another(
    plaintext: bytes, aad: bytes, other: bytes
) -> None:
    blob = ENV.seal(ALICE, plaintext, aad)
    if other != aad:
        with pytest.raises((AadMismatch, TamperedBlob)):
            ENV.open(ALICE, blob, other)


def test_copied_row_value_names_the_mismatch() -> None:
    blob = ENV.seal(ALICE, b"tok", b"credentials|refresh_token|crd_eu_1")
    with pytest.raises(AadMismatch, match="another place"):
        ENV.open(ALICE, blob, b"credentials|refresh_token|crd_eu_2")


@given(payloads)
def test_blob_of_one_user_fails_under_another_users_key(plaintext: bytes) -> None:
    blob = ENV.seal(ALICE, plaintext, AAD)
    with pytest.raises(WrongDataKey):
        ENV.open(BOB, blob, AAD)
    # Bob's wrapped key relabelled with Alice's id does not unwrap: the wrapping binds the id.
    with pytest.raises(TamperedBlob):
        _envelope().open(dataclasses.replace(BOB, dek_id=ALICE.dek_id), blob, AAD)


def test_key_commitment_refuses_a_different_key_under_the_same_id() -> None:
    other = _envelope("us")
    impostor = other.new_data_key(ALICE.dek_id)
    blob = ENV.seal(ALICE, b"secret", AAD)
    with pytest.raises(WrongDataKey, match="commit"):
        other.open(impostor, blob, AAD)


def _format_v1_keys(dek: bytes) -> tuple[AESGCM, bytes]:
    def derive(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(dek)

    return (AESGCM(derive(b"aggregator/envelope/v1/encrypt")),
            derive(b"aggregator/envelope/v1/commit"))


def test_blob_layout_is_the_documented_format_v1() -> None:
    # Built from the table in vault/envelope.py, not from its code: a faster seal must
    # keep writing exactly this, or stored values stop opening.
    aead, commitment = _format_v1_keys(ENV.provider.unwrap(ALICE))
    blob = ENV.seal(ALICE, b"refresh-token", AAD)
    raw_id = ALICE.dek_id.encode("ascii")
    n = len(raw_id)
    assert blob[:2 + n] == bytes([0x01, n]) + raw_id
    assert blob[2 + n:34 + n] == commitment
    nonce = blob[34 + n:46 + n]
    assert blob[46 + n:50 + n] == zlib.crc32(AAD).to_bytes(4, "big")
    assert aead.decrypt(nonce, blob[50 + n:], blob[:50 + n] + AAD) == b"refresh-token"


def test_a_blob_built_to_the_documented_format_v1_opens() -> None:
    aead, commitment = _format_v1_keys(ENV.provider.unwrap(ALICE))
    raw_id = ALICE.dek_id.encode("ascii")
    nonce = os.urandom(NONCE_SIZE)
    header = (bytes([0x01, len(raw_id)]) + raw_id + commitment + nonce
              + zlib.crc32(AAD).to_bytes(4, "big"))
    blob = header + aead.encrypt(nonce, b"sealed elsewhere", header + AAD)
    assert ENV.open(ALICE, blob, AAD) == b"sealed elsewhere"
    with pytest.raises(AadMismatch):  # the fingerprint tells a swapped AAD from tampering
        ENV.open(ALICE, blob, AAD + b"|other-row")


def test_unknown_format_version_is_named() -> None:
    blob = bytearray(ENV.seal(ALICE, b"x", AAD))
    blob[0] = 0x7F
    with pytest.raises(UnknownFormatVersion, match="127"):
        ENV.open(ALICE, bytes(blob), AAD)


def test_nonces_never_repeat_across_100k_seals() -> None:
    env = _envelope("nonces")
    key = env.new_data_key("dek_nonces")
    nonces = set()
    for _ in range(100_000):
        nonces.add(parse_header(env.seal(key, b"", b"")).nonce)
    assert len(nonces) == 100_000
    assert all(len(n) == NONCE_SIZE for n in nonces)


def test_seal_limit_asks_for_rotation_before_the_nonce_bound() -> None:
    env = _envelope("limit", seal_limit=100)
    key = env.new_data_key("dek_limit")
    for _ in range(100):
        env.seal(key, b"v", b"")
    with pytest.raises(SealLimitReached, match="rotate"):
        env.seal(key, b"v", b"")


def test_seal_limit_counts_across_envelopes_sharing_a_counter() -> None:
    from vault import MemorySealCounter

    counter = MemorySealCounter()
    first = _envelope("shared", seal_limit=100, seal_counter=counter)
    key = first.new_data_key("dek_shared")
    for _ in range(60):
        first.seal(key, b"v", b"")
    second = _envelope("shared", seal_limit=100, seal_counter=counter)
    for _ in range(40):
        second.seal(key, b"v", b"")
    with pytest.raises(SealLimitReached):
        second.seal(key, b"v", b"")


def test_old_blobs_open_after_rotation_and_rewrap() -> None:
    env = _envelope("rotate")
    key = env.new_data_key("dek_rot")
    blob = env.seal(key, b"before rotation", AAD)
    env.provider.rotate()
    rewrapped = env.rewrap(key)
    assert rewrapped.kek_version == 2
    fresh = _envelope("rotate")  # a new process: nothing cached
    assert fresh.open(key, blob, AAD) == b"before rotation"
    fresh.forget(key.dek_id)
    assert fresh.open(rewrapped, blob, AAD) == b"before rotation"


def test_raising_minimum_version_fails_old_wrapped_keys_clearly() -> None:
    env = _envelope("retire")
    key = env.new_data_key("dek_ret")
    blob = env.seal(key, b"v", AAD)
    env.provider.rotate()
    rewrapped = env.rewrap(key)
    env.provider.set_min_decryption_version(2)
    fresh = _envelope("retire")
    with pytest.raises(KekVersionRetired, match="minimum decryption version"):
        fresh.open(key, blob, AAD)
    assert fresh.open(rewrapped, blob, AAD) == b"v"


def test_forget_drops_the_cached_key_at_once() -> None:
    env = _envelope("forget")
    key = env.new_data_key("dek_f")
    assert env.is_cached(key.dek_id)
    env.forget(key.dek_id)
    assert not env.is_cached(key.dek_id)


def test_cache_is_bounded() -> None:
    env = _envelope("bounded", cache_size=5)
    for i in range(12):
        env.new_data_key(f"dek_{i}")
    stats = env.stats()
    assert stats.size == 5
    assert stats.evictions == 7


def test_expired_entries_are_purged_not_kept_until_size_eviction() -> None:
    now = [1000.0]
    env = _envelope("expiry", cache_ttl=60.0, clock=lambda: now[0])
    for i in range(5):
        env.new_data_key(f"dek_old_{i}")
    now[0] += 61  # every entry is past its TTL: their key material must go
    env.new_data_key("dek_new")
    assert env.stats().size == 1
    now[0] += 61
    assert env.purge_expired() == 1
    assert env.stats().size == 0


@settings(max_examples=25)
@given(st.binary(min_size=1, max_size=64))
def test_blob_never_contains_the_plaintext(secret: bytes) -> None:
    plaintext = b"rt_" + secret + b"_refresh"
    assert plaintext not in ENV.seal(ALICE, plaintext, AAD)
