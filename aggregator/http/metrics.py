"""Prometheus metrics of the HTTP layer, in a registry of the app's own.

A registry per app (not prometheus-client's global one) lets tests and embedders build
any number of apps in one process without "duplicated timeseries" errors. Routes are
labelled by their template (``/v1/users/{id}``), and requests that match no route share
the label ``unmatched``, so a scanner probing random paths cannot blow up the series.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from aggregator.bankhealth import BreakerView, Summary
from aggregator.bankhealth.reads import BREAKER_LEVELS, breakers, last_hour
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.worker.lease import backlog
from aggregator.worker.outbox import pending

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
#: The fleet gauges (backlog, outbox) are re-read at most this often.
FLEET_SECONDS = 15.0
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Latency buckets around what one core serves (~0.1 ms per request at best: docs/
# architecture.md, "Performance notes"), up to the bank round trips behind DELETE and sync.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """Request counts, latencies and in-flight requests by method, route template, status."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        if registry is None:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.requests = Counter(
            "aggregator_http_requests", "HTTP requests answered",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "aggregator_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response",
            ["method", "route"], buckets=_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge(
            "aggregator_http_requests_in_flight", "Requests being served",
            registry=self.registry,
        )

        # What the workers have left to do, seen from the gateway (one scrape target for
        # the whole fleet): refreshed at most every FLEET_SECONDS, however often scraped.
        self.due_backlog = Gauge(
            "aggregator_refresh_due_backlog", "Credentials due for refresh and not leased",
            ["region"], registry=self.registry,
        )
        self.oldest_due = Gauge(
            "aggregator_refresh_oldest_due_age_seconds",
            "How overdue the most overdue credential is", ["region"], registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "aggregator_outbox_depth", "Outbound events waiting for a delivery attempt",
            ["region"], registry=self.registry,
        )
        # Bank health of the whole fleet (docs/architecture.md, "Bank health"): what every
        # worker and gateway process flushed to each region's store, and the breakers
        # their heartbeats report. Labels come from configured banks and closed outcome
        # sets, so the series stay bounded.
        self.bank_calls = Gauge(
            "aggregator_bank_calls_last_hour", "Calls to a bank in the last hour",
            ["region", "bank", "operation", "outcome"], registry=self.registry,
        )
        self.bank_error_rate = Gauge(
            "aggregator_bank_error_rate_last_hour",
            "Share of the last hour's calls that the bank failed", ["region", "bank",
                                                                    "operation"],
            registry=self.registry,
        )
        self.bank_p95 = Gauge(
            "aggregator_bank_call_p95_seconds",
            "Upper bound of the bucket holding the last hour's 95th percentile latency",
            ["region", "bank", "operation"], registry=self.registry,
        )
        self.bank_breaker = Gauge(
            "aggregator_bank_breaker_state",
            "Worst live breaker state among processes: 0 closed, 1 half-open, 2 open",
            ["region", "bank"], registry=self.registry,
        )
        self.bank_breaker_processes = Gauge(
            "aggregator_bank_breaker_processes",
            "Live processes whose breaker is in the worst state", ["region", "bank"],
            registry=self.registry,
        )
        self._bank_series: dict[str, list[tuple[Gauge, tuple[str, ...]]]] = {}
        self._fleet_at = -FLEET_SECONDS
        self._fleet_lock = asyncio.Lock()

    async def refresh_fleet(self, router: RegionRouter) -> None:
        """Re-read the fleet gauges if they are older than :data:`FLEET_SECONDS`.

        Each query walks an index over due rows only (``refresh_due_at``,
        ``next_attempt_at``); a region whose database fails keeps its last values.
        """
        async with self._fleet_lock:
            if time.monotonic() - self._fleet_at < FLEET_SECONDS:
                return
            self._fleet_at = time.monotonic()
            for region in router.regions:
                try:
                    now = utcnow()
                    found = await backlog(router, region, now)
                    waiting = await pending(router, region)
                except Exception:
                    log.warning("metrics: fleet gauges of region %s failed", region,
                                exc_info=True)
                    continue
                self.due_backlog.labels(region).set(found.due)
                overdue = (now - found.oldest_due_at).total_seconds() if found.oldest_due_at else 0
                self.oldest_due.labels(region).set(max(overdue, 0.0))
                self.outbox_depth.labels(region).set(waiting.events)
                try:
                    async with router.reader(region) as session:
                        calls = await last_hour(session, now)
                        states = await breakers(session, now)
                except Exception:
                    log.warning("metrics: bank health of region %s failed", region,
                                exc_info=True)
                    continue
                self._set_banks(region, calls, states)

    def _set_banks(self, region: str, calls: dict[str, dict[str, Summary]],
                   states: dict[str, BreakerView]) -> None:
        """Replace the region's bank series (a bank gone quiet drops out)."""
        for gauge, labels in self._bank_series.pop(region, []):
            gauge.remove(*labels)
        series: list[tuple[Gauge, tuple[str, ...], float]] = []
        for bank, operations in calls.items():
            for operation, summary in operations.items():
                for outcome, n in summary.outcomes.items():
                    series.append((self.bank_calls, (region, bank, operation, outcome), n))
                if summary.error_rate is not None:
                    series.append((self.bank_error_rate, (region, bank, operation),
                                   summary.error_rate))
                if summary.p95 is not None:
                    series.append((self.bank_p95, (region, bank, operation), summary.p95))
        for bank, view in states.items():
            series.append((self.bank_breaker, (region, bank), BREAKER_LEVELS[view.state]))
            series.append((self.bank_breaker_processes, (region, bank), view.reporting))
        for gauge, labels, number in series:
            gauge.labels(*labels).set(number)
        self._bank_series[region] = [(gauge, labels) for gauge, labels, _ in series]

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
