"""Reading a Plaid secret from Vault/OpenBao (KV v2) at start-up, through the region's
Transit connection: the same URL, namespace, CA and credentials (token or AppRole), so
an operator grants one more path to a role they already run instead of a new login.

The secret is read once per process start; rotating it means restarting the gateway
and workers, like any other setting. Failures stop start-up with the mount and path
named, never the value (hvac's own messages may quote the answer, so they are dropped).
"""

from __future__ import annotations

from typing import Any

import hvac

from aggregator.errors import ConfigError
from aggregator.settings import VaultSecretRef
from vault import Secret, TransitConfig


def read_vault_secret(transit: TransitConfig, ref: VaultSecretRef, region: str) -> Secret:
    """The ``ref.field`` of the KV v2 secret at ``ref.mount``/``ref.path``."""
    where = f"regions.{region}.plaid: Vault secret {ref.mount}/{ref.path}#{ref.field}"
    client = hvac.Client(
        url=transit.url, token=transit.token.reveal() if transit.token else None,
        namespace=transit.namespace, verify=transit.verify, timeout=transit.timeout,
    )
    try:
        if transit.token is None and transit.approle_secret_id is not None:
            client.auth.approle.login(role_id=transit.approle_role_id,
                                      secret_id=transit.approle_secret_id.reveal(),
                                      mount_point=transit.approle_mount)
        answer: Any = client.secrets.kv.v2.read_secret_version(
            path=ref.path, mount_point=ref.mount, raise_on_deleted_version=True)
    except hvac.exceptions.InvalidPath:
        raise ConfigError(f"{where}: no such secret") from None
    except hvac.exceptions.Forbidden:
        raise ConfigError(f"{where}: the region's Vault credentials may not read it") from None
    except (hvac.exceptions.VaultError, OSError) as exc:  # requests' errors are OSErrors
        raise ConfigError(f"{where}: Vault could not be read ({type(exc).__name__})") from None
    finally:
        client.adapter.close()
    data = answer.get("data", {}).get("data", {}) if isinstance(answer, dict) else {}
    value = data.get(ref.field) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: the secret has no non-empty field {ref.field!r}")
    return Secret(value)
