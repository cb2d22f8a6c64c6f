"""Build the configured :class:`~vault.interfaces.KeyProvider`.

The HSM and Vault providers are imported only when configured, so a machine without
python-pkcs11's native module or a Vault address still runs the local default.
"""

from __future__ import annotations

from vault.config import LocalKeyringConfig, Pkcs11Config, ProviderConfig, TransitConfig
from vault.interfaces import KeyProvider


def open_provider(config: ProviderConfig) -> KeyProvider:
    """Return the provider for ``config``; no network or token access happens yet."""
    if isinstance(config, LocalKeyringConfig):
        from vault.local import LocalKeyring

        return LocalKeyring(config)
    if isinstance(config, Pkcs11Config):
        from vault.pkcs11 import Pkcs11Provider

        return Pkcs11Provider(config)
    if isinstance(config, TransitConfig):
        from vault.transit import TransitProvider

        return TransitProvider(config)
    raise TypeError(f"unknown key provider configuration {type(config).__name__}")
