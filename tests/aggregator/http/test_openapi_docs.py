"""What `/docs` shows: every operation of the API explains itself."""

from __future__ import annotations

from aggregator.http.routes import api_routes
from aggregator.http.routing import ApiRoute


def test_every_api_operation_has_a_summary_and_a_description() -> None:
    """The hosted Link pages (``aggregator.link``) are pages for people, documented by
    their owners; every other operation carries both."""
    missing = []
    for route in api_routes():
        if not isinstance(route, ApiRoute) or route.handler.__module__.startswith(
                "aggregator.link"):
            continue
        op = route.operation
        if not op.summary or not (op.description or "").strip():
            missing.append(f"{sorted(route.methods or ())} {route.path}")
    assert missing == []
