"""Per-region Plaid configuration: credentials, environment and the API host.

Each region talks to Plaid with its own client id and secret, so an Item linked for an
``eu`` user is never reachable with the ``us`` credentials (DESIGN: Data residency).
The API host can be overridden so tests point the real plaid-python client at a
loopback server; production leaves it unset and gets Plaid's host for the environment.

Environment variables (``prefix`` defaults to ``AGGREGATOR_PLAID_``), for region ``eu``::

    AGGREGATOR_PLAID_EU_CLIENT_ID      required
    AGGREGATOR_PLAID_EU_SECRET         required; held as a vault.Secret
    AGGREGATOR_PLAID_EU_ENV            sandbox | production (default sandbox)
    AGGREGATOR_PLAID_EU_HOST           optional API host override (tests, proxies)
    AGGREGATOR_PLAID_EU_PRODUCTS       comma-separated, default "transactions"
    AGGREGATOR_PLAID_EU_COUNTRY_CODES  comma-separated, default "US"
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from connectors.errors import ProfileError
from vault import Secret

__all__ = ["PlaidConfig", "PlaidEnvironment"]

_CODE = re.compile(r"[A-Z]{2}")
_PRODUCT = re.compile(r"[a-z_]{1,40}")


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

    @classmethod
    def from_environment(
        cls, region: str, environ: Mapping[str, str] | None = None,
        *, prefix: str = "AGGREGATOR_PLAID_",
    ) -> PlaidConfig:
        """Read the region's settings; a missing or invalid one is a :class:`ProfileError`."""
        env = os.environ if environ is None else environ
        base = f"{prefix}{region.upper()}_"
        source = f"environment ({base}*)"

        def need(name: str) -> str:
            value = env.get(base + name, "").strip()
            if not value:
                raise ProfileError(source, base + name, "is not set")
            return value

        raw_env = env.get(base + "ENV", "sandbox").strip().lower()
        try:
            environment = PlaidEnvironment(raw_env)
        except ValueError:
            raise ProfileError(source, base + "ENV", "must be sandbox or production") from None
        products = _split(env.get(base + "PRODUCTS", "transactions").lower())
        countries = _split(env.get(base + "COUNTRY_CODES", "US").upper())
        if not products or not all(_PRODUCT.fullmatch(p) for p in products):
            raise ProfileError(source, base + "PRODUCTS", "must list Plaid product names")
        if not countries or not all(_CODE.fullmatch(c) for c in countries):
            raise ProfileError(source, base + "COUNTRY_CODES", "must list ISO 3166 codes")
        return cls(
            region=region, client_id=need("CLIENT_ID"), secret=Secret(need("SECRET")),
            environment=environment, host=env.get(base + "HOST") or None,
            products=products, country_codes=countries,
        )


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())
