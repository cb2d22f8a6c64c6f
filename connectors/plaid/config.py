"""Per-region Plaid configuration: credentials, environment and the API host.

Each region talks to Plaid with its own client id and secret, so an Item linked for an
``eu`` user is never reachable with the ``us`` credentials (docs/architecture.md, "Data residency").
The API host can be overridden so tests point the real plaid-python client at a
loopback server; production leaves it unset and gets Plaid's host for the environment.

The gateway reads these from its settings (``[regions.<name>.plaid]`` in
``aggregator/settings``); this package only holds the validated values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vault import Secret

__all__ = ["PlaidConfig", "PlaidEnvironment"]


class PlaidEnvironment(enum.Enum):
    """Which Plaid deployment a region's credentials belong to."""

    SANDBOX = "sandbox"  # test Items and fake institutions; keys distinct from production
    PRODUCTION = "production"  # real institutions and real money

    @property
    def default_host(self) -> str:
        return f"https://{self.value}.plaid.com"


@dataclass(frozen=True, slots=True)
class PlaidConfig:
    """How one region reaches Plaid.

    >>> cfg = PlaidConfig("eu", "cid", Secret("s3cr3t"), PlaidEnvironment.SANDBOX)
    >>> cfg.api_host, "s3cr3t" in repr(cfg)
    ('https://sandbox.plaid.com', False)
    """

    region: str
    client_id: str
    secret: Secret
    environment: PlaidEnvironment
    host: str | None = None
    products: tuple[str, ...] = ("transactions",)
    country_codes: tuple[str, ...] = ("US",)
    client_name: str = "Aggregator"
    language: str = "en"
    #: Seconds for one Plaid API call (connect + read).
    timeout: float = 15.0

    @property
    def api_host(self) -> str:
        return (self.host or self.environment.default_host).rstrip("/")
