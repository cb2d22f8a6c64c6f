"""The key-custody contract every provider implements, and the values it exchanges.

A *data key* (DEK) is a random 256-bit AES key that seals one data subject's fields. It is
never stored in clear: the region's *key-encryption key* (KEK), held by a provider, wraps
it. Providers differ only in where the KEK lives:

- :class:`vault.local.LocalKeyring`      files under a 0700 directory (development default)
- :class:`vault.pkcs11.Pkcs11Provider`   an AES key inside a PKCS#11 token (HSM)
- :class:`vault.transit.TransitProvider` a HashiCorp Vault / OpenBao Transit key

Example::

    provider = open_provider(LocalKeyringConfig(directory=Path("var/keys"), kek_id="eu"))
    provider.ensure_kek()
    dk = provider.generate_data_key("dek_usr_eu_123")
    assert provider.unwrap(dk.wrapped) == dk.plaintext
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key as it may be stored: useless without the KEK that wrapped it.

    ``dek_id`` names the data key (the envelope blob carries it); ``kek_version`` says
    which KEK version can open it, so rotation and retirement can be reasoned about
    without asking the provider.
    """

    dek_id: str
    provider: str
    kek_id: str
    kek_version: int
    ciphertext: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DataKey:
    """A freshly generated data key: the plaintext for immediate use and its wrapped form."""

    plaintext: bytes = field(repr=False)
    wrapped: WrappedKey


@dataclass(frozen=True, slots=True)
class KekStatus:
    """What an operator may see of a KEK: versions and policy, never key material."""

    provider: str
    kek_id: str
    latest_version: int
    min_decryption_version: int
    versions: tuple[int, ...]
    details: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps data keys under one region's KEK.

    Contract:

    - ``ensure_kek()`` creates the KEK (version 1) if it does not exist yet; idempotent.
    - ``generate_data_key(dek_id)`` returns 32 random bytes and their wrapping under the
      newest KEK version.
    - ``unwrap(wrapped)`` returns the 32-byte plaintext, or raises
      :class:`~vault.errors.KekVersionRetired` when ``wrapped.kek_version`` is below the
      minimum decryption version, :class:`~vault.errors.DataKeyDestroyed` or
      :class:`~vault.errors.TamperedBlob` when the ciphertext does not open.
    - ``rewrap(wrapped)`` re-encrypts under the newest version without the plaintext
      leaving the provider's trust boundary where the provider supports it (Vault
      Transit ``rewrap``; an HSM unwraps into a sensitive, non-extractable object and
      wraps that; the local keyring is in process anyway). The data key is unchanged:
      values sealed under it open as before.
    - ``rewrap_many(wrapped)`` is ``rewrap`` for a batch, in order, in as few provider
      round trips as the provider allows; if any item fails it raises (naming the data
      key) and returns nothing, so a caller stores all of a batch or none of it.
    - ``rotate()`` adds a KEK version and returns it; old versions keep decrypting until
      ``set_min_decryption_version`` is raised past them.
    - All failures are :class:`~vault.errors.VaultError` subclasses; a provider never
      lets a library's own exception escape.

    Providers are synchronous (their client libraries are); async callers run them in a
    thread, and :class:`vault.envelope.Envelope` caches unwrapped keys so that this is rare.
    """

    kind: str
    kek_id: str

    def ensure_kek(self) -> None: ...

    def generate_data_key(self, dek_id: str) -> DataKey: ...

    def unwrap(self, wrapped: WrappedKey) -> bytes: ...

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey: ...

    def rewrap_many(self, wrapped: Sequence[WrappedKey]) -> list[WrappedKey]: ...

    def rotate(self) -> int: ...

    def set_min_decryption_version(self, version: int) -> None: ...

    def status(self) -> KekStatus: ...

    def close(self) -> None: ...
