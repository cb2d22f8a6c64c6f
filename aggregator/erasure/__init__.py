"""Data-subject erasure (docs/architecture.md, "Erasure"): revoke, delete, shred, prove.

- :mod:`~aggregator.erasure.requests`: accepting a request (idempotent), deadlines;
- :mod:`~aggregator.erasure.steps`: the local steps, one transaction each;
- :mod:`~aggregator.erasure.revocation`: RFC 7009 revocation at the banks, with retries;
- :mod:`~aggregator.erasure.escrow`: tokens kept for revocation after shredding;
- :mod:`~aggregator.erasure.job`: running and resuming requests;
- :mod:`~aggregator.erasure.receipts`: what a request and its receipt show;
- :mod:`~aggregator.erasure.metrics`: open and overdue requests for Prometheus.
"""

from aggregator.erasure.job import ErasureJob, resume_pending
from aggregator.erasure.metrics import ErasureMetrics, count_overdue
from aggregator.erasure.receipts import ErasureRequestOut, ReceiptOut, RevocationOut, request_view
from aggregator.erasure.requests import (
    DEFAULT_DEADLINE,
    ErasureConfig,
    find_request,
    open_requests,
    request_erasure,
    user_digest,
)
from aggregator.erasure.revocation import expire_escrow, retry_failed
from aggregator.erasure.steps import ERASED_LISTENERS, HOOKS, user_tables

__all__ = [
    "DEFAULT_DEADLINE",
    "ERASED_LISTENERS",
    "HOOKS",
    "ErasureConfig",
    "ErasureJob",
    "ErasureMetrics",
    "ErasureRequestOut",
    "ReceiptOut",
    "RevocationOut",
    "count_overdue",
    "expire_escrow",
    "find_request",
    "open_requests",
    "request_erasure",
    "request_view",
    "resume_pending",
    "retry_failed",
    "user_digest",
    "user_tables",
]
