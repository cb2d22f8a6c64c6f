"""Provider settings as plain values, so vault/ never reads files or the environment itself.

The gateway's settings module builds these from its TOML file and environment; tests
build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vault.secret import Secret


@dataclass(frozen=True, slots=True)
class LocalKeyringConfig:
    """KEK files under ``directory/kek_id/`` (the development default)."""

    directory: Path
    kek_id: str


@dataclass(frozen=True, slots=True)
class Pkcs11Config:
    """An AES KEK inside a PKCS#11 token; versions are labels ``{kek_label}.v{N}``."""

    module: Path
    token_label: str
    pin: Secret
    kek_label: str


@dataclass(frozen=True, slots=True)
class TransitConfig:
    """A Vault/OpenBao Transit key; authenticate with a token or with AppRole."""

    url: str
    key_name: str
    mount: str = "transit"
    token: Secret | None = None
    approle_role_id: str | None = None
    approle_secret_id: Secret | None = None
    approle_mount: str = "approle"
    namespace: str | None = None
    verify: bool | str = True
    timeout: float = 5.0


ProviderConfig = LocalKeyringConfig | Pkcs11Config | TransitConfig
