"""aggregator/http/schema.py: one dataclass validates, encodes and documents a body."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.http.problems import ValidationFailed
from aggregator.http.schema import decode, decode_query, dumps, encode, json_schema, rules


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    n: int = field(metadata=rules(minimum=1, maximum=3))


@dataclass(frozen=True)
class Body:
    """A body with one field of each kind."""

    name: str = field(metadata=rules(min_length=2, max_length=5, pattern=r"^[a-z]+$"))
    count: int
    flag: bool
    colour: Colour
    inner: Inner
    tags: list[str]
    amount: Decimal
    at: datetime
    day: date
    note: str | None = None


GOOD: dict[str, Any] = {
    "name": "abc", "count": 2, "flag": True, "colour": "red", "inner": {"n": 2},
    "tags": ["x"], "amount": "-12.50", "at": "2025-03-01T10:00:00Z", "day": "2025-03-01",
}


def errors_of(data: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        decode(Body, data)
    return {e.pointer or "": e.detail for e in caught.value.errors}


def test_valid_body_decodes_to_typed_values() -> None:
    body = decode(Body, GOOD)
    assert body.colour is Colour.RED
    assert body.inner == Inner(2)
    assert body.amount == Decimal("-12.50")
    assert body.at == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert body.day == date(2025, 3, 1)
    assert body.note is None


def test_every_bad_field_is_reported_at_once() -> None:
    bad = {**GOOD, "name": "a", "count": "2", "flag": 1, "colour": "green",
           "inner": {"n": 9, "extra": 1}, "tags": ["x", 3], "surplus": True}
    del bad["day"]
    assert errors_of(bad) == {
        "#/name": "must be at least 2 characters long",
        "#/count": "must be an integer",
        "#/flag": "must be a boolean",
        "#/colour": "must be one of red, blue",
        "#/inner/extra": "unknown field",
        "#/inner/n": "must be at most 3",
        "#/tags/1": "must be a string",
        "#/surplus": "unknown field",
        "#/day": "is required",
    }


@pytest.mark.parametrize(("value", "problem"), [
    (True, "must be an integer"),  # bool is an int in Python, never in the API
    (1.0, "must be an integer"),
    (None, "must not be null"),
])
def test_integers_are_strict(value: object, problem: str) -> None:
    assert errors_of({**GOOD, "count": value}) == {"#/count": problem}


@pytest.mark.parametrize("text", ["ab\x00", "ab\n", "a\ud800b"])
def test_control_characters_and_lone_surrogates_are_refused(text: str) -> None:
    assert "#/name" in errors_of({**GOOD, "name": text})


@pytest.mark.parametrize(("key", "value"), [
    ("amount", 12.5), ("amount", "1e3"), ("amount", "12.34567"),
    ("at", "2025-03-01T10:00:00"), ("at", "yesterday"), ("day", "2025-02-30"),
])
def test_money_and_times_must_be_exact_strings(key: str, value: object) -> None:
    assert f"#/{key}" in errors_of({**GOOD, key: value})


def test_non_objects_are_refused_whole() -> None:
    assert errors_of([GOOD]) == {"#": "must be a JSON object"}


def test_query_parameters_are_coerced_and_checked() -> None:
    parsed = decode_query(Inner, {"n": "3"}, ["n"])
    assert parsed == Inner(3)
    with pytest.raises(ValidationFailed) as caught:
        decode_query(Inner, {"n": "x", "m": "1"}, ["n", "m"])
    found = {(e.parameter, e.detail) for e in caught.value.errors}
    assert found == {("m", "unknown parameter"), ("n", "must be an integer")}
    with pytest.raises(ValidationFailed):
        decode_query(Inner, {"n": "2"}, ["n", "n"])


def test_encode_gives_json_types() -> None:
    body = decode(Body, GOOD)
    out = encode(body)
    assert out["amount"] == "-12.50"
    assert out["at"] == "2025-03-01T10:00:00Z"
    assert out["colour"] == "red"
    assert decode(Body, out) == body  # what we send back, we would accept


def test_schema_mirrors_the_validation_rules() -> None:
    components: dict[str, Any] = {}
    ref = json_schema(Body, components)
    assert ref == {"$ref": "#/components/schemas/Body"}
    body = components["Body"]
    assert body["additionalProperties"] is False
    assert set(body["required"]) == set(GOOD)
    assert body["properties"]["name"] == {
        "type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$",
    }
    assert body["properties"]["note"]["type"] == ["string", "null"]
    assert body["properties"]["colour"] == {"type": "string", "enum": ["red", "blue"]}
    assert body["properties"]["inner"] == {"$ref": "#/components/schemas/Inner"}
    assert components["Inner"]["properties"]["n"] == {
        "type": "integer", "minimum": 1, "maximum": 3,
    }
    assert body["description"] == "A body with one field of each kind."


# -- dumps: orjson straight from dataclasses, the same bytes as encode -----------------


class _Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class _Inner:
    when: datetime | None
    day: date | None
    amount: Decimal


@dataclass(frozen=True)
class _Outer:
    name: str
    count: int
    ratio: float
    flag: bool
    colour: _Colour
    inner: _Inner | None
    rows: list[_Inner]
    extra: dict[str, Any]


_OFFSETS: st.SearchStrategy[Any] = st.sampled_from([
    UTC, timezone(timedelta(hours=2)), timezone(timedelta(0)),
    timezone(timedelta(hours=-5, minutes=-30)), None,
])
_INSTANTS = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30),
                         timezones=_OFFSETS)
_DECIMALS = st.decimals(allow_nan=False, allow_infinity=False, places=None) | st.sampled_from(
    [Decimal("1E+2"), Decimal("-0.0000"), Decimal("1204.5000"), Decimal("0E-4")])
_INNER = st.builds(_Inner, when=st.none() | _INSTANTS, day=st.none() | st.dates(),
                   amount=_DECIMALS)
_OUTER = st.builds(
    _Outer, name=st.text(), count=st.integers(-(2**63), 2**63 - 1),
    ratio=st.floats(allow_nan=False, allow_infinity=False), flag=st.booleans(),
    colour=st.sampled_from(_Colour), inner=st.none() | _INNER,
    rows=st.lists(_INNER, max_size=3),
    extra=st.dictionaries(st.text(max_size=5), st.none() | st.text() | _DECIMALS | _INSTANTS,
                          max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(_OUTER)
def test_dumps_writes_exactly_what_encode_then_orjson_writes(value: _Outer) -> None:
    assert dumps(value) == orjson.dumps(encode(value))


def test_dumps_falls_back_to_encode_for_what_orjson_refuses() -> None:
    value = {1: Decimal("2.50"), "n": [_Colour.RED]}  # a non-string key
    assert dumps(value) == orjson.dumps(encode(value)) == b'{"1":"2.50","n":["red"]}'
