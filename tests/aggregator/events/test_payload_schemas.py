"""Each event type's payload is its own schema in the OpenAPI document (issue 17), and the
schemas name only keys the outbox allows."""

from __future__ import annotations

import dataclasses

from aggregator.events.outbox import EVENT_TYPES, FIELDS
from aggregator.http.openapi import build_openapi
from aggregator.http.routes import events
from aggregator.http.routes.events import EVENT_PAYLOADS


def test_every_event_type_has_a_published_payload_schema() -> None:
    assert set(EVENT_PAYLOADS) == set(EVENT_TYPES)
    schemas = build_openapi(events.routes(), title="t", version="1")["components"]["schemas"]
    for event_type, cls in EVENT_PAYLOADS.items():
        schema = schemas[cls.__name__]
        names = {f.name for f in dataclasses.fields(cls)}
        assert names <= set(FIELDS), event_type
        # No union of nulls: every field of a type's payload is required and not nullable.
        assert set(schema["required"]) == names, event_type
        assert all("null" not in str(p) for p in schema["properties"].values()), event_type
    assert "user_id" in schemas["UserErasedEventData"]["required"]
    assert "erasure_request_id" in schemas["UserErasedEventData"]["required"]
    assert "no_endpoint" in schemas["EventOut"]["properties"]["delivery"]["description"]
