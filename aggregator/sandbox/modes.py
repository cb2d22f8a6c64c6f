"""The sandbox bank's modes, by the bank id of the profile that links to each.

``aggregator demo --bank ID`` and ``aggregator sandbox-bank --mode`` build the bank
through :data:`MODES`; each mode's profile ships in ``connectors/banks/``. A mode's
factory takes the redirect URIs its development client registers and the gateway's data
directory, where a ``private_key_jwt`` client's key is generated and shared
(:mod:`aggregator.sandbox_keys`).

Example::

    bank = MODES["sandbox-obie"](("http://127.0.0.1/link/callback",), settings.data_dir)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from aggregator.sandbox.bank import SandboxBank
from aggregator.sandbox.config import DEV_CLIENT_ID, DEV_CLIENT_SECRET, SandboxClient, SandboxConfig

__all__ = ["MODES", "Factory"]

Factory = Callable[[Sequence[str], Path], SandboxBank]


def _plain(redirect_uris: Sequence[str], data_dir: Path) -> SandboxBank:
    return SandboxBank(SandboxConfig(clients=[SandboxClient(
        client_id=DEV_CLIENT_ID, client_secret=DEV_CLIENT_SECRET, redirect_uris=redirect_uris,
    )]))


def _obie(redirect_uris: Sequence[str], data_dir: Path) -> SandboxBank:
    from aggregator.sandbox.obie import ObieSandboxBank, dev_obie_client

    return ObieSandboxBank(SandboxConfig(clients=[dev_obie_client(data_dir, redirect_uris)]))


def _fapi2(redirect_uris: Sequence[str], data_dir: Path) -> SandboxBank:
    from aggregator.sandbox.fapi2 import Fapi2SandboxBank, dev_fapi2_client

    client = dev_fapi2_client(data_dir, tuple(redirect_uris))
    return Fapi2SandboxBank(SandboxConfig(clients=[client], require_par=True))


MODES: dict[str, Factory] = {
    "sandbox-eu": _plain,
    "sandbox-us": _plain,
    "sandbox-obie": _obie,
    "sandbox-fapi2": _fapi2,
    # Every sandbox bank serves the Berlin Group XS2A interface (aggregator/sandbox/berlin*).
    "sandbox-berlin": _plain,
}
