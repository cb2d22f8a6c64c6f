"""The KeyProvider contract, proven once against every backend (local, HSM, Vault)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from vault import (
    DataKeyDestroyed,
    Envelope,
    KekVersionRetired,
    KeyProvider,
    TamperedBlob,
    VaultError,
    WrappedKey,
)

ProviderFactory = Callable[[str], KeyProvider]


def test_ensure_kek_is_idempotent_and_starts_at_version_one(
    provider_factory: ProviderFactory,
) -> None:
    provider = provider_factory("eu")
    provider.ensure_kek()
    status = provider.status()
    assert status.latest_version == 1
    assert status.versions == (1,)
    assert status.min_decryption_version == 1
    assert status.provider == provider.kind


def test_generated_data_key_unwraps_to_the_same_256_bits(
    provider_factory: ProviderFactory,
) -> None:
    provider = provider_factory("eu")
    dk = provider.generate_data_key("dek_usr_eu_1")
    assert len(dk.plaintext) == 32
    assert dk.wrapped.dek_id == "dek_usr_eu_1"
    assert dk.wrapped.kek_version == 1
    assert dk.plaintext not in dk.wrapped.ciphertext
    assert provider.unwrap(dk.wrapped) == dk.plaintext


def test_each_data_key_is_fresh(provider_factory: ProviderFactory) -> None:
    provider = provider_factory("eu")
    keys = {provider.generate_data_key(f"dek_{i}").plaintext for i in range(20)}
    assert len(keys) == 20


def test_altered_wrapped_key_does_not_unwrap(provider_factory: ProviderFactory) -> None:
    provider = provider_factory("eu")
    wrapped = provider.generate_data_key("dek_a").wrapped
    ct = bytearray(wrapped.ciphertext)
    ct[-3] ^= 0x01
    with pytest.raises((TamperedBlob, DataKeyDestroyed)):
        provider.unwrap(dataclasses.replace(wrapped, ciphertext=bytes(ct)))


def test_regions_do_not_share_keks(provider_factory: ProviderFactory) -> None:
    eu, us = provider_factory("eu"), provider_factory("us")
    wrapped = eu.generate_data_key("dek_a").wrapped
    with pytest.raises(VaultError):
        us.unwrap(dataclasses.replace(wrapped, kek_id=us.kek_id))


def test_rotation_keeps_old_versions_decryptable(provider_factory: ProviderFactory) -> None:
    provider = provider_factory("eu")
    old = provider.generate_data_key("dek_old")
    assert provider.rotate() == 2
    new = provider.generate_data_key("dek_new")
    assert new.wrapped.kek_version == 2
    assert provider.unwrap(old.wrapped) == old.plaintext
    status = provider.status()
    assert status.latest_version == 2
    assert set(status.versions) >= {1, 2}


def test_rewrap_moves_to_newest_version_without_changing_the_key(
    provider_factory: ProviderFactory,
) -> None:
    provider = provider_factory("eu")
    dk = provider.generate_data_key("dek_a")
    provider.rotate()
    rewrapped = provider.rewrap(dk.wrapped)
    assert rewrapped.kek_version == 2
    assert rewrapped.dek_id == "dek_a"
    assert rewrapped.ciphertext != dk.wrapped.ciphertext
    assert provider.unwrap(rewrapped) == dk.plaintext


def test_raised_minimum_version_retires_older_wrapped_keys(
    provider_factory: ProviderFactory,
) -> None:
    provider = provider_factory("eu")
    dk = provider.generate_data_key("dek_a")
    provider.rotate()
    rewrapped = provider.rewrap(dk.wrapped)
    provider.set_min_decryption_version(2)
    with pytest.raises(KekVersionRetired, match="minimum"):
        provider.unwrap(dk.wrapped)
    assert provider.unwrap(rewrapped) == dk.plaintext
    assert provider.status().min_decryption_version == 2


def test_status_reveals_no_key_material(provider_factory: ProviderFactory) -> None:
    provider = provider_factory("eu")
    dk = provider.generate_data_key("dek_a")
    text = repr(provider.status()) + repr(dk)
    assert dk.plaintext.hex() not in text
    assert repr(dk.plaintext) not in text


def test_envelope_unwraps_once_per_key_per_cache_period(
    provider_factory: ProviderFactory,
) -> None:
    provider = provider_factory("eu")
    writer = Envelope(provider)
    keys = [writer.new_data_key(f"dek_usr_{i}") for i in range(10)]
    blobs = [writer.seal(k, b"refresh-token", aad=k.dek_id.encode()) for k in keys]

    now = [0.0]
    counting = _CountingProvider(provider)
    reader = Envelope(counting, cache_ttl=60.0, clock=lambda: now[0])
    for _ in range(5):
        for key, blob in zip(keys, blobs, strict=True):
            assert reader.open(key, blob, aad=key.dek_id.encode()) == b"refresh-token"
    assert counting.unwraps == 10
    now[0] = 61.0
    reader.open(keys[0], blobs[0], aad=keys[0].dek_id.encode())
    assert counting.unwraps == 11
    assert reader.stats().unwraps == 11


class _CountingProvider:
    """Counts the calls that reach the real provider underneath."""

    def __init__(self, inner: KeyProvider) -> None:
        self._inner = inner
        self.kind = inner.kind
        self.kek_id = inner.kek_id
        self.unwraps = 0

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        self.unwraps += 1
        return self._inner.unwrap(wrapped)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_rewrap_many_moves_a_batch_to_the_newest_version_in_order(
    provider_factory: ProviderFactory,
) -> None:
    provider = provider_factory("eu")
    keys = [provider.generate_data_key(f"dek_batch_{i}") for i in range(5)]
    provider.rotate()
    middle = provider.generate_data_key("dek_batch_v2")  # already on version 2
    assert provider.rotate() == 3
    batch = [k.wrapped for k in keys] + [middle.wrapped]
    rewrapped = provider.rewrap_many(batch)
    assert [w.dek_id for w in rewrapped] == [w.dek_id for w in batch]
    assert {w.kek_version for w in rewrapped} == {3}
    provider.set_min_decryption_version(3)
    assert [provider.unwrap(w) for w in rewrapped] == [k.plaintext for k in [*keys, middle]]
    assert provider.rewrap_many([]) == []


def test_rewrap_many_fails_whole_naming_the_bad_data_key(
    provider_factory: ProviderFactory,
) -> None:
    provider = provider_factory("eu")
    good = provider.generate_data_key("dek_good").wrapped
    bad = provider.generate_data_key("dek_bad").wrapped
    ct = bytearray(bad.ciphertext)
    ct[-3] ^= 0x01
    provider.rotate()
    with pytest.raises(VaultError, match="dek_bad"):
        provider.rewrap_many([good, dataclasses.replace(bad, ciphertext=bytes(ct))])
