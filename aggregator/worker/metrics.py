"""Prometheus metrics of one worker process, in a registry of its own.

Outcomes are a closed set (:data:`OUTCOMES`) and banks come from the loaded profiles, so
label cardinality is bounded by configuration, never by traffic. The error budget is a
rolling window of the last refreshes per bank: ``1`` means no failure, ``0`` means the
bank has used all the failures its budget (:attr:`WorkerMetrics.budget`) allows.
"""

from __future__ import annotations

import threading
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

#: What a refresh attempt can end as.
OUTCOMES = ("ok", "invalid_grant", "unavailable", "rate_limited", "protocol_error",
            "lease_lost", "breaker_open", "resolved_elsewhere", "reverify", "egress_refused",
            "error")
_FAILURES = frozenset({"unavailable", "rate_limited", "protocol_error"})
# Token endpoints answer in 50-500 ms (the figures); timeouts are at 10 s.
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    """Counters, gauges and histograms the worker updates; see the module docstring."""

    def __init__(self, budget: float = 0.01, window: int = 1000) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.budget = budget
        self._window = window
        self._recent: dict[str, deque[bool]] = {}
        self._lock = threading.Lock()
        r = self.registry
        self.refreshes = Counter("aggregator_worker_refreshes", "Refresh attempts by outcome",
                                 ["bank", "outcome"], registry=r)
        self.latency = Histogram("aggregator_worker_refresh_duration_seconds",
                                 "Token endpoint round trip of one refresh", ["bank"],
                                 buckets=_BUCKETS, registry=r)
        self.backlog = Gauge("aggregator_worker_due_backlog",
                             "Credentials due and not leased", ["region"], registry=r)
        self.oldest_due = Gauge("aggregator_worker_oldest_due_age_seconds",
                                "How overdue the most overdue credential is", ["region"],
                                registry=r)
        self.leased = Counter("aggregator_worker_leased", "Credentials leased", ["region"],
                              registry=r)
        self.takeovers = Counter("aggregator_worker_lease_takeovers",
                                 "Credentials found in flight under a dead worker's lease",
                                 ["region"], registry=r)
        self.breaker = Gauge("aggregator_worker_breaker_state",
                             "Per-bank breaker: 0 closed, 1 half-open, 2 open", ["bank"],
                             registry=r)
        self.error_budget = Gauge("aggregator_worker_error_budget_remaining",
                                  "Share of the bank's failure budget left over the window",
                                  ["bank"], registry=r)
        self.in_flight = Gauge("aggregator_worker_in_flight", "Leased credentials in work",
                               registry=r)
        self.outbox_depth = Gauge("aggregator_worker_outbox_depth",
                                  "Outbound events waiting for a delivery attempt", ["region"],
                                  registry=r)
        self.outbox_oldest = Gauge("aggregator_worker_outbox_oldest_age_seconds",
                                   "Age of the oldest outbound event still waiting", ["region"],
                                   registry=r)
        self.deliveries = Counter("aggregator_worker_outbox_deliveries",
                                  "Outbound event delivery attempts by outcome (delivered, "
                                  "failed, lost: the lease lapsed first)", ["outcome"],
                                  registry=r)
        self.uncommitted = Histogram(
            "aggregator_worker_uncommitted_seconds",
            "From the bank's answer to a refresh until the commit storing the rotated "
            "tokens: the window in which a killed worker loses a grant", registry=r,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0))
        self.commits = Counter("aggregator_worker_refresh_commits",
                               "Transactions that stored refreshed tokens (group commits)",
                               registry=r)
        self.committed = Counter("aggregator_worker_refresh_committed",
                                 "Credentials whose refreshed tokens those commits stored",
                                 registry=r)

    def outcome(self, bank: str, outcome: str) -> None:
        self.refreshes.labels(bank, outcome).inc()
        if outcome in ("breaker_open", "lease_lost", "resolved_elsewhere", "reverify", "error"):
            return  # no call reached the bank on our behalf, or not one we can judge
        failed = outcome in _FAILURES
        with self._lock:
            recent = self._recent.setdefault(bank, deque(maxlen=self._window))
            recent.append(failed)
            rate = sum(recent) / len(recent)
        self.error_budget.labels(bank).set(max(0.0, 1.0 - rate / self.budget))

    def committed_batch(self, rows: int) -> None:
        """One group commit of refreshed tokens, carrying ``rows`` credentials."""
        self.commits.inc()
        self.committed.inc(rows)

    def delivered(self, delivered: int, failed: int, lost: int) -> None:
        """Count one outbox pass's attempts."""
        for outcome, n in (("delivered", delivered), ("failed", failed), ("lost", lost)):
            if n:
                self.deliveries.labels(outcome).inc(n)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` on a loopback port, from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
