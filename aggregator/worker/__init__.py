"""The token-refresh worker (docs/architecture.md, "Refreshing"), in small parts:

- :mod:`~aggregator.worker.lease`: leasing due credentials in batches, releasing them;
- :mod:`~aggregator.worker.refresh`: one leased credential, from in-flight mark to commit,
  including the resolution of a dead worker's in-flight mark;
- :mod:`~aggregator.worker.breaker`: backoff with jitter and the per-bank breaker;
- :mod:`~aggregator.worker.runner`: the leasing loops, concurrency and graceful stop;
- :mod:`~aggregator.worker.process`: signals and services of one worker process;
- :mod:`~aggregator.worker.metrics`: its Prometheus metrics.
"""

from aggregator.worker.breaker import Backoff, Breaker, BreakerState
from aggregator.worker.lease import Lease, lease_batch
from aggregator.worker.metrics import WorkerMetrics
from aggregator.worker.refresh import CrashPoints, RefreshContext, on_reauth_required
from aggregator.worker.runner import Worker, WorkerConfig

__all__ = [
    "Backoff",
    "Breaker",
    "BreakerState",
    "CrashPoints",
    "Lease",
    "RefreshContext",
    "Worker",
    "WorkerConfig",
    "WorkerMetrics",
    "lease_batch",
    "on_reauth_required",
]
