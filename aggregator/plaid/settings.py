"""Plaid settings, read from the environment here until ``aggregator/settings.py`` has them.

``AGGREGATOR_PLAID_WEBHOOK_BASE_URL`` is the gateway's public base URL; each region whose
``AGGREGATOR_PLAID_<REGION>_CLIENT_ID`` is set gets a :class:`connectors.PlaidConfig`
(see :meth:`connectors.PlaidConfig.from_environment` for the per-region variables) and
the webhook URL ``{base}/webhooks/plaid/{region}``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from connectors import PlaidConfig


@dataclass(frozen=True, slots=True)
class PlaidSettings:
    """Which regions use Plaid, with what credentials, and where webhooks come in."""

    regions: Mapping[str, PlaidConfig]
    webhook_base_url: str

    def webhook_url(self, region: str) -> str:
        return f"{self.webhook_base_url.rstrip('/')}/webhooks/plaid/{region}"


def load_plaid_settings(
    regions: Collection[str], environ: Mapping[str, str] | None = None
) -> PlaidSettings:
    env = os.environ if environ is None else environ
    configs = {
        region: PlaidConfig.from_environment(region, env)
        for region in regions
        if env.get(f"AGGREGATOR_PLAID_{region.upper()}_CLIENT_ID")
    }
    base = env.get("AGGREGATOR_PLAID_WEBHOOK_BASE_URL", "http://127.0.0.1:8080")
    return PlaidSettings(configs, base)
