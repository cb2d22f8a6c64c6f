"""Plaid in the gateway: settings, the webhook receiver, and applying stored webhooks.

The connector and the webhook verification live in :mod:`connectors` (no database);
this package stores and acts on what they return.
"""

from aggregator.plaid.apply import (
    DEDUP_RETENTION,
    HISTORY_RETENTION,
    SYNC_REQUESTED,
    NoPlaidHooks,
    PlaidHooks,
    apply_webhook_event,
    finish_sync,
    pending_events,
    purge_expired,
)
from aggregator.plaid.receiver import PlaidWebhooks, Receipt, store_webhook

__all__ = [
    "DEDUP_RETENTION",
    "HISTORY_RETENTION",
    "SYNC_REQUESTED",
    "NoPlaidHooks",
    "PlaidHooks",
    "PlaidWebhooks",
    "Receipt",
    "apply_webhook_event",
    "finish_sync",
    "pending_events",
    "purge_expired",
    "store_webhook",
]
