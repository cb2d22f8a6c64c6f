"""Errors raised by vault/, one tree rooted at :class:`VaultError`.

::

    VaultError
    ├── BlobError                     a sealed value cannot be parsed or opened
    │   ├── TamperedBlob              authentication failed: bits flipped, truncated or extended
    │   ├── UnknownFormatVersion      the blob's format byte is not one this code reads
    │   ├── AadMismatch               the blob was sealed for another place (row, column, subject)
    │   └── WrongDataKey              the blob belongs to another data key (id or key commitment)
    ├── DataKeyError                  a data key cannot be used
    │   ├── DataKeyDestroyed          the wrapped key is gone (crypto-shredded) or never existed
    │   ├── KekVersionRetired         wrapped under a KEK version below the minimum for decryption
    │   └── SealLimitReached          the key sealed too many values for random nonces; rotate it
    └── ProviderError                 the key provider failed
        ├── ProviderUnavailable       it cannot be reached or answered with a server error
        ├── ProviderPermissionDenied  it refused our credentials or policy
        ├── InsecureKeyStore          the local keyring's files are readable by others
        └── ProviderMisconfigured     a setting is missing or wrong (names the setting)

Messages say what to do next and never contain key material, plaintext or tokens.
"""

from __future__ import annotations


class VaultError(Exception):
    """Root of every error raised by vault/."""

    code = "vault_error"


class BlobError(VaultError):
    """A sealed blob cannot be opened."""

    code = "blob_error"


class TamperedBlob(BlobError):
    """Raised when authentication fails or the blob is too short: the value was altered."""

    code = "tampered_blob"


class UnknownFormatVersion(BlobError):
    """Raised for a blob written by a newer (or foreign) format this code cannot read."""

    code = "unknown_format_version"


class AadMismatch(BlobError):
    """Raised when a blob is opened for another place than the one it was sealed for."""

    code = "aad_mismatch"


class WrongDataKey(BlobError):
    """Raised when a blob is opened with a data key other than the one that sealed it."""

    code = "wrong_data_key"


class DataKeyError(VaultError):
    """A data key cannot be used."""

    code = "data_key_error"


class DataKeyDestroyed(DataKeyError):
    """Raised when the wrapped data key no longer exists (erased) or was never created."""

    code = "data_key_destroyed"


class KekVersionRetired(DataKeyError):
    """Raised when a data key is wrapped under a KEK version below `min_decryption_version`."""

    code = "kek_version_retired"


class SealLimitReached(DataKeyError):
    """Raised before a data key sealed so many values that random nonces could collide."""

    code = "seal_limit_reached"


class ProviderError(VaultError):
    """The key provider (keyring, HSM, Vault) failed."""

    code = "key_provider_error"


class ProviderUnavailable(ProviderError):
    """Raised when the provider cannot be reached or failed on its side; retry later."""

    code = "key_provider_unavailable"


class ProviderPermissionDenied(ProviderError):
    """Raised when the provider rejects our credentials, PIN or policy."""

    code = "key_provider_permission_denied"


class InsecureKeyStore(ProviderError):
    """Raised at start-up when the local keyring's directory or files are open to others."""

    code = "insecure_key_store"


class ProviderMisconfigured(ProviderError):
    """Raised at start-up when a provider setting is missing or invalid."""

    code = "key_provider_misconfigured"
