"""Plugging Plaid into a gateway or worker process, from ``Settings`` (``[regions.*.plaid]``).

:func:`attach_plaid` gives the process's :class:`~aggregator.sync.BankDirectory` one
:class:`~connectors.PlaidConnector` per Plaid region (the sync job, Link, removal and
erasure find it there); :func:`install_plaid_webhooks`, called by the composer's
``open_services``, also builds the webhook receiver; it takes the process's shared state
as :class:`~aggregator.plaid.needs.PlaidNeeds`, never the composer's own types.
A region without Plaid settings answers 404 on its webhook path and refuses ``bank_id``
"plaid" in link sessions.

plaid-python talks through urllib3, not httpx, so the egress transport cannot guard its
connections; instead each region's Plaid host is held to the outbound policy here, at
start-up (https, no private, loopback or metadata address in any spelling; a loopback
test server only with ``egress.allow_http_loopback``).
"""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry

from aggregator.errors import ConfigError
from aggregator.plaid.needs import SERVICE_KEY, PlaidNeeds
from aggregator.plaid.receiver import PlaidWebhooks
from aggregator.plaid.vault_secret import read_vault_secret
from aggregator.settings import RegionSettings, Settings
from aggregator.sync.banks import BankDirectory
from connectors import PlaidConnector, WebhookKeys, WebhookVerifier
from connectors.plaid.keys import RECHECK_AFTER
from vault import TransitConfig


def attach_plaid(banks: BankDirectory, settings: Settings) -> list[str]:
    """One connector per region with Plaid settings; returns those regions.

    A secret kept in Vault is read here, at start-up (:mod:`aggregator.plaid.vault_secret`);
    a region whose secret cannot be read stops the process with a :class:`ConfigError`.
    """
    for region, found in settings.regions.items():
        plaid = found.plaid
        if plaid is None or region in banks.plaid_regions():
            continue
        config = plaid.config
        problem = settings.egress.url_problem(config.api_host)
        if problem:
            raise ConfigError(f"regions.{region}.plaid.host: {problem}")
        if plaid.vault_secret is not None:
            if not isinstance(found.keys, TransitConfig):  # refused by load_settings too
                raise ConfigError(f"regions.{region}.plaid: a Vault secret needs Transit keys")
            secret = read_vault_secret(found.keys, plaid.vault_secret, region)
            config = dataclasses.replace(config, secret=secret)
        banks.attach_plaid(region, PlaidConnector(config), plaid.sync_policy)
    return banks.plaid_regions()


def build_plaid_webhooks(
    banks: BankDirectory, services: PlaidNeeds, registry: CollectorRegistry | None = None
) -> PlaidWebhooks:
    """One key cache and verifier per Plaid region, each asking its own environment."""
    regions = services.settings.regions
    verifiers = {
        region: WebhookVerifier(WebhookKeys(
            banks.plaid(region).webhook_key, recheck_after=_recheck(regions.get(region))))
        for region in banks.plaid_regions() if region in services.router.regions
    }
    return PlaidWebhooks(services.router, verifiers, registry)


def install_plaid_webhooks(
    services: PlaidNeeds, registry: CollectorRegistry | None = None
) -> PlaidWebhooks | None:
    """Attach the settings' Plaid regions and put the receiver in ``services``."""
    if not isinstance(services.banks, BankDirectory):
        return None
    attach_plaid(services.banks, services.settings)
    receiver = build_plaid_webhooks(services.banks, services, registry)
    services.extra[SERVICE_KEY] = receiver
    return receiver


def _recheck(region: RegionSettings | None) -> float:
    plaid = region.plaid if region is not None else None
    return float(plaid.webhook_key_recheck if plaid is not None else RECHECK_AFTER)
