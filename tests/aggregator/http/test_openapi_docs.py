"""What `/docs` shows: every operation of the API explains itself."""

from __future__ import annotations

from aggregator.http.app import gateway_routes
from aggregator.http.routing import ApiRoute


def test_every_api_operation_has_a_summary_and_a_description() -> None:
    """The hosted Link pages (``aggregator.link``) are pages for people, documented by
    their owners; every other operation carries both."""
    missing = []
    for route in gateway_routes():
        if not isinstance(route, ApiRoute) or route.handler.__module__.startswith(
                "aggregator.link"):
            continue
        op = route.operation
        if not op.summary or not (op.description or "").strip():
            missing.append(f"{sorted(route.methods or ())} {route.path}")
    assert missing == []


def test_every_example_in_the_schemas_satisfies_its_own_property() -> None:
    """Swagger UI builds sample requests and responses from these; a sample that the API
    itself would refuse would teach the wrong thing."""
    import re

    from aggregator.http.openapi import build_openapi

    document = build_openapi(gateway_routes(), title="t", version="0")
    checked = 0
    for schema in document["components"]["schemas"].values():
        for name, prop in schema.get("properties", {}).items():
            for example in prop.get("examples", []):
                checked += 1
                if "pattern" in prop:
                    assert re.search(prop["pattern"], example), (name, example)
                if "enum" in prop:
                    assert example in prop["enum"], (name, example)
                if "maxLength" in prop:
                    assert len(example) <= prop["maxLength"], (name, example)
    assert checked >= 15
