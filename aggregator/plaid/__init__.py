"""Plaid in the gateway: settings, the webhook receiver, and applying stored webhooks.

The connector and the webhook verification live in :mod:`connectors` (no database);
this package stores and acts on what they return.
"""

from aggregator.plaid.apply import NoPlaidHooks, PlaidHooks, apply_webhook_event, pending_events
from aggregator.plaid.receiver import PlaidWebhooks, Receipt, store_webhook
from aggregator.plaid.settings import PlaidSettings, load_plaid_settings

__all__ = [
    "NoPlaidHooks",
    "PlaidHooks",
    "PlaidSettings",
    "PlaidWebhooks",
    "Receipt",
    "apply_webhook_event",
    "load_plaid_settings",
    "pending_events",
    "store_webhook",
]
