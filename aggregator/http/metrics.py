"""Prometheus metrics of the HTTP layer, in a registry of the app's own.

A registry per app (not prometheus-client's global one) lets tests and embedders build
any number of apps in one process without "duplicated timeseries" errors. Routes are
labelled by their template (``/v1/users/{id}``), and requests that match no route share
the label ``unmatched``, so a scanner probing random paths cannot blow up the series.
"""

from __future__ import annotations

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

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Latency buckets around what one core serves (FINDINGS: ~0.1 ms per request at best),
# up to the bank round trips behind DELETE and sync.
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

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
