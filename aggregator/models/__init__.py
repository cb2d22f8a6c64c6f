"""The schema of a region's database; only `aggregator` knows it.

Every configured region runs the same schema (one Alembic history, ``migrations/``). The
tables, by owner:

- global configuration, replicated to every region: ``applications``, ``api_keys``;
- the region itself: ``region_secrets`` (the wrapped pepper, the region stamp),
  ``audit_events`` and ``audit_head`` (the hash chain);
- a user, reached by ``ON DELETE CASCADE`` from ``users``: ``data_keys``,
  ``link_sessions``, ``connections``, ``credentials``, ``accounts``, ``balances``,
  ``transactions``, ``sync_states``, ``sync_runs``, ``account_resources``;
- erasure, outliving the user it erases and holding no personal data once done:
  ``erasure_requests``, ``erasure_revocations``;
- outbound events (the outbox, with their delivery state): ``outbound_events``;
- the sync budget ledger (unattended bank calls per connection and data type):
  ``sync_spends``;
- the API rate limiter's token buckets (no personal data in clear):
  ``rate_limit_buckets``;
- idempotency keys (first answers kept 24 hours for retries): ``idempotency_keys``;
- key rotation (the KEK's schedule and the rotating worker's lease): ``kek_rotations``;
- the operator console's accounts and sessions, replicated like applications:
  ``operators``, ``operator_sessions``.
"""

from aggregator.models.audit import AuditEvent, AuditHead
from aggregator.models.bankhealth import BankCallMinute, BreakerHeartbeat, RefreshAttempt
from aggregator.models.banking import (
    Account,
    AccountType,
    Balance,
    SyncState,
    Transaction,
    TransactionStatus,
)
from aggregator.models.base import (
    NAMING_CONVENTION,
    Base,
    metadata,
    region_columns,
    sealed_columns,
)
from aggregator.models.budgets import DataType, SyncSpend
from aggregator.models.erasure import (
    ErasureRequest,
    ErasureRevocation,
    ErasureState,
    RevocationOutcome,
)
from aggregator.models.events import OutboundEvent
from aggregator.models.idempotency import IdempotencyRecord, IdempotencyState
from aggregator.models.keys import DataKeyErasure, KekRotation
from aggregator.models.linking import (
    Connection,
    ConnectionStatus,
    Credential,
    LinkSession,
    LinkStatus,
)
from aggregator.models.operators import Operator, OperatorRole, OperatorSession
from aggregator.models.plaid import PlaidWebhookEvent, WebhookStatus
from aggregator.models.ratelimits import RateLimitBucket
from aggregator.models.syncs import AccountResource, ResourceOutcome, SyncOutcome, SyncRun
from aggregator.models.tenancy import ApiKey, Application, DataKeyRecord, RegionSecret, User
from aggregator.models.types import Money, UTCDateTime

__all__ = [
    "NAMING_CONVENTION",
    "Account",
    "AccountResource",
    "AccountType",
    "ApiKey",
    "Application",
    "AuditEvent",
    "AuditHead",
    "Balance",
    "BankCallMinute",
    "Base",
    "BreakerHeartbeat",
    "Connection",
    "ConnectionStatus",
    "Credential",
    "DataKeyErasure",
    "DataKeyRecord",
    "DataType",
    "ErasureRequest",
    "ErasureRevocation",
    "ErasureState",
    "IdempotencyRecord",
    "IdempotencyState",
    "KekRotation",
    "LinkSession",
    "LinkStatus",
    "Money",
    "Operator",
    "OperatorRole",
    "OperatorSession",
    "OutboundEvent",
    "PlaidWebhookEvent",
    "RateLimitBucket",
    "RefreshAttempt",
    "RegionSecret",
    "ResourceOutcome",
    "RevocationOutcome",
    "SyncOutcome",
    "SyncRun",
    "SyncSpend",
    "SyncState",
    "Transaction",
    "TransactionStatus",
    "UTCDateTime",
    "User",
    "WebhookStatus",
    "metadata",
    "region_columns",
    "sealed_columns",
]
