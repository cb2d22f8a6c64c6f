"""Bank health (docs/architecture.md, "Bank health"): how each bank has been answering.

- :mod:`~aggregator.bankhealth.recorder`: :class:`CallRecorder` tallies calls (refresh,
  sync, consent) and refresh attempts in process and flushes them in batches;
- :mod:`~aggregator.bankhealth.store`: the batched writes, breaker heartbeats, pruning;
- :mod:`~aggregator.bankhealth.reads`: per-region figures for the console and ``/metrics``;
- :mod:`~aggregator.bankhealth.job`: the worker's periodic flush, heartbeat and prune.
"""

from __future__ import annotations

from aggregator.bankhealth.reads import FAILURES, STALE, BreakerView, Summary
from aggregator.bankhealth.recorder import (
    OPERATIONS,
    CallRecorder,
    close_recorder_in,
    recorder_in,
)

__all__ = [
    "FAILURES",
    "OPERATIONS",
    "STALE",
    "BreakerView",
    "CallRecorder",
    "Summary",
    "close_recorder_in",
    "recorder_in",
]
