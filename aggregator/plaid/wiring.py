"""Building the Plaid webhook receiver for a gateway process.

``open_services`` calls :func:`install_plaid_webhooks` once it has the router; a region
without Plaid settings answers 404 on its webhook path.

plaid-python talks through urllib3, not httpx, so the egress transport cannot guard its
connections; instead each region's Plaid host is held to the outbound policy here, at
start-up (https, no private, loopback or metadata address in any spelling; a loopback
test server only with ``egress.allow_http_loopback``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from aggregator.errors import ConfigError
from aggregator.http.routes.plaid_webhooks import SERVICE_KEY
from aggregator.http.services import Services
from aggregator.plaid.receiver import PlaidWebhooks
from aggregator.plaid.settings import PlaidSettings, load_plaid_settings
from connectors import PlaidConnector, WebhookKeys, WebhookVerifier


def build_plaid_webhooks(
    services: Services, plaid: PlaidSettings, registry: CollectorRegistry | None = None
) -> PlaidWebhooks:
    """One connector, key cache and verifier per Plaid region, each its own environment."""
    for region, config in plaid.regions.items():
        problem = services.settings.egress.url_problem(config.api_host)
        if problem:
            raise ConfigError(f"AGGREGATOR_PLAID_{region.upper()}_HOST: {problem}")
    verifiers = {
        region: WebhookVerifier(WebhookKeys(PlaidConnector(config).webhook_key))
        for region, config in plaid.regions.items()
        if region in services.router.regions
    }
    return PlaidWebhooks(services.router, verifiers, registry)


def install_plaid_webhooks(
    services: Services, registry: CollectorRegistry | None = None
) -> PlaidWebhooks:
    """Read the Plaid settings from the environment and put the receiver in ``services``."""
    plaid = load_plaid_settings(services.router.regions)
    receiver = build_plaid_webhooks(services, plaid, registry)
    services.extra[SERVICE_KEY] = receiver
    return receiver
