"""The sandbox bank's modes, by the bank id of the profile that links to each.

``aggregator demo --bank ID`` and ``aggregator sandbox-bank --mode`` build the bank
through :data:`MODES`; each mode's profile ships in ``connectors/banks/``. A mode's
factory takes the redirect URIs its development client registers.

Example::

    bank = MODES["sandbox-obie"](("http://127.0.0.1/link/callback",))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aggregator.sandbox.bank import SandboxBank
from aggregator.sandbox.config import DEV_CLIENT_ID, DEV_CLIENT_SECRET, SandboxClient, SandboxConfig

__all__ = ["MODES", "Factory"]

Factory = Callable[[Sequence[str]], SandboxBank]


def _plain(redirect_uris: Sequence[str]) -> SandboxBank:
    return SandboxBank(SandboxConfig(clients=[SandboxClient(
        client_id=DEV_CLIENT_ID, client_secret=DEV_CLIENT_SECRET, redirect_uris=redirect_uris,
    )]))


def _obie(redirect_uris: Sequence[str]) -> SandboxBank:
    from aggregator.sandbox.obie import ObieSandboxBank, dev_obie_client

    return ObieSandboxBank(SandboxConfig(clients=[dev_obie_client(redirect_uris)]))


MODES: dict[str, Factory] = {
    "sandbox-eu": _plain,
    "sandbox-us": _plain,
    "sandbox-obie": _obie,
    # Every sandbox bank serves the Berlin Group XS2A interface (aggregator/sandbox/berlin*).
    "sandbox-berlin": _plain,
}
