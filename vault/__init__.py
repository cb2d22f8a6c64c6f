"""Key custody and envelope encryption; depends on nothing else of ours.

What other packages may import is listed in ``__all__`` and nowhere else; modules are
private to the package.
"""

from vault.config import LocalKeyringConfig, Pkcs11Config, ProviderConfig, TransitConfig
from vault.envelope import (
    CacheStats,
    Envelope,
    MemorySealCounter,
    SealCounter,
    data_key_id,
)
from vault.errors import (
    AadMismatch,
    BlobError,
    DataKeyDestroyed,
    DataKeyError,
    InsecureKeyStore,
    KekVersionRetired,
    ProviderError,
    ProviderMisconfigured,
    ProviderPermissionDenied,
    ProviderUnavailable,
    SealLimitReached,
    TamperedBlob,
    UnknownFormatVersion,
    VaultError,
    WrongDataKey,
)
from vault.interfaces import DataKey, KekStatus, KeyProvider, WrappedKey
from vault.providers import open_provider
from vault.secret import Secret

__all__ = [
    "AadMismatch",
    "BlobError",
    "CacheStats",
    "DataKey",
    "DataKeyDestroyed",
    "DataKeyError",
    "Envelope",
    "InsecureKeyStore",
    "KekStatus",
    "KekVersionRetired",
    "KeyProvider",
    "LocalKeyringConfig",
    "MemorySealCounter",
    "Pkcs11Config",
    "ProviderConfig",
    "ProviderError",
    "ProviderMisconfigured",
    "ProviderPermissionDenied",
    "ProviderUnavailable",
    "SealCounter",
    "SealLimitReached",
    "Secret",
    "TamperedBlob",
    "TransitConfig",
    "UnknownFormatVersion",
    "VaultError",
    "WrappedKey",
    "WrongDataKey",
    "data_key_id",
    "open_provider",
]
