"""Bodies as dataclasses: one declaration validates requests, encodes responses, feeds OpenAPI.

Why not a validation library: pydantic is not among our dependencies, and the API needs
little. A request body is a frozen dataclass; :func:`decode` builds it from parsed JSON
or rejects it with a :class:`~aggregator.http.problems.ValidationFailed` listing *every*
bad field (unknown, missing, wrong type, out of bounds), never just the first. The
same class gives the JSON Schema (:func:`json_schema`) that ``/openapi.json`` publishes,
so the documentation cannot drift from what is enforced. Responses are dataclasses too,
encoded by :func:`encode`.

Field types: ``str``, ``int``, ``bool``, ``Decimal`` (a string: money never travels as a
binary float), ``datetime``/``date`` (ISO 8601 strings), ``enum.Enum`` subclasses (their
values), ``list[T]``, ``dict[str, T]``, nested dataclasses and ``T | None``. Constraints
go in the field's metadata::

    @dataclass(frozen=True)
    class CreateUser:
        external_id: str = field(metadata=rules(min_length=1, max_length=255))

Every string is refused if it holds a control character or a lone surrogate: PostgreSQL
rejects NUL in text and UTF-8 cannot encode surrogates, and either would otherwise
surface as a 500 deep inside the store.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import orjson

from aggregator.http.problems import FieldError, ValidationFailed

T = TypeVar("T")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INT = re.compile(r"^-?[0-9]{1,18}$")


def rules(
    *,
    description: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    example: Any = None,
) -> dict[str, Any]:
    """Field metadata: constraints enforced by :func:`decode` and published in the schema."""
    given = {
        "description": description, "minLength": min_length, "maxLength": max_length,
        "pattern": pattern, "minimum": minimum, "maximum": maximum, "examples": (
            None if example is None else [example]
        ),
    }
    return {"schema": {k: v for k, v in given.items() if v is not None}}


# -- decoding ---------------------------------------------------------------------------


def decode(cls: type[T], data: Any) -> T:
    """Build ``cls`` from a parsed JSON body, or raise ``ValidationFailed`` with all errors."""
    errors: list[FieldError] = []
    value = _object(cls, data, "#", errors)
    if errors:
        raise ValidationFailed(errors)
    return typing.cast(T, value)


def decode_query(cls: type[T], params: Mapping[str, str], keys: list[str]) -> T:
    """Build ``cls`` from query parameters (strings; ``keys`` lists each occurrence)."""
    errors: list[FieldError] = []
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name in sorted(set(keys)):
        if name not in known:
            errors.append(FieldError("unknown parameter", parameter=name))
        elif keys.count(name) > 1:
            errors.append(FieldError("given more than once", parameter=name))
    for name, f in known.items():
        if name not in params or keys.count(name) > 1:
            continue
        tp = _strip_optional(hints[name])[0]
        raw = params[name]
        if tp is int:
            if not _INT.match(raw):
                errors.append(FieldError("must be an integer", parameter=name))
                continue
            value: Any = int(raw)
        else:
            value = raw
        sub: list[FieldError] = []
        checked = _value(tp, f.metadata, value, "#", sub)
        errors.extend(FieldError(e.detail, parameter=name) for e in sub)
        values[name] = checked
    if errors:
        raise ValidationFailed(errors)
    return cls(**values)


def _object(cls: type[Any], data: Any, at: str, errors: list[FieldError]) -> Any:
    if not isinstance(data, dict):
        errors.append(FieldError("must be a JSON object", pointer=at))
        return None
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(set(data) - set(fields)):
        errors.append(FieldError("unknown field", pointer=f"{at}/{_escape(name)}"))
    values: dict[str, Any] = {}
    for name, f in fields.items():
        where = f"{at}/{_escape(name)}"
        if name not in data:
            if _required(f):
                errors.append(FieldError("is required", pointer=where))
            continue
        values[name] = _value(hints[name], f.metadata, data[name], where, errors)
    if len(errors):
        return None
    return cls(**values)


def _value(tp: Any, meta: Mapping[str, Any], value: Any, at: str,
           errors: list[FieldError]) -> Any:
    tp, nullable = _strip_optional(tp)
    if value is None:
        if not nullable:
            errors.append(FieldError("must not be null", pointer=at))
        return None
    before = len(errors)
    checked = _typed(tp, value, at, errors)
    if len(errors) == before:
        _constrain(meta.get("schema", {}), checked, at, errors)
    return checked


def _typed(tp: Any, value: Any, at: str, errors: list[FieldError]) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _object(tp, value, at, errors)
    origin = get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            errors.append(FieldError("must be an array", pointer=at))
            return None
        (item,) = get_args(tp)
        return [_value(item, {}, v, f"{at}/{i}", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(FieldError("must be an object", pointer=at))
            return None
        item = get_args(tp)[1]
        return {k: _value(item, {}, v, f"{at}/{_escape(k)}", errors) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        if value not in allowed:
            errors.append(FieldError(f"must be one of {', '.join(map(str, allowed))}",
                                     pointer=at))
            return None
        return tp(value)
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(FieldError("must be a boolean", pointer=at))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(FieldError("must be an integer", pointer=at))
        return value
    if tp in _PARSED:
        return _parsed(tp, value, at, errors)
    if tp is str:
        if not isinstance(value, str):
            errors.append(FieldError("must be a string", pointer=at))
        elif problem := _text_problem(value):
            errors.append(FieldError(problem, pointer=at))
        return value
    raise TypeError(f"{tp!r} cannot be decoded from a request")  # a bug in a body class


_PARSED: dict[Any, tuple[Any, str]] = {
    Decimal: (Decimal, "must be a decimal number in a string, e.g. \"-12.50\""),
    datetime: (datetime.fromisoformat, "must be an ISO 8601 date-time with an offset"),
    date: (date.fromisoformat, "must be an ISO 8601 date (YYYY-MM-DD)"),
}
_DECIMAL = re.compile(r"-?[0-9]{1,16}(\.[0-9]{1,4})?")


def _parsed(tp: Any, value: Any, at: str, errors: list[FieldError]) -> Any:
    parse, message = _PARSED[tp]
    ok = isinstance(value, str) and len(value) <= 40
    if ok and tp is Decimal:
        ok = _DECIMAL.fullmatch(value) is not None
    parsed: Any = None
    if ok:
        try:
            parsed = parse(value.replace("Z", "+00:00") if tp is datetime else value)
        except ValueError:
            ok = False
    if ok and tp is datetime and parsed.utcoffset() is None:
        ok = False  # a naive time is ambiguous: refuse rather than guess its zone
    if not ok:
        errors.append(FieldError(message, pointer=at))
        return None
    return parsed


def _text_problem(value: str) -> str | None:
    if _CONTROL.search(value):
        return "must not contain control characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def _constrain(schema: Mapping[str, Any], value: Any, at: str, errors: list[FieldError]) -> None:
    def fail(detail: str) -> None:
        errors.append(FieldError(detail, pointer=at))

    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            fail("must not be empty" if schema["minLength"] == 1 else
                 f"must be at least {schema['minLength']} characters long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            fail(f"must be at most {schema['maxLength']} characters long")
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            fail(f"must match {schema['pattern']}")
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            fail(f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            fail(f"must be at most {schema['maximum']}")


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{tp!r}: only `T | None` unions are supported")
        return args[0], True
    return tp, False


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")  # RFC 6901 §3


# -- encoding ---------------------------------------------------------------------------


_PLAIN = frozenset({str, int, bool, float, type(None)})
#: Field names per response dataclass: ``dataclasses.fields`` per value was most of the
#: cost of encoding a 500-row page (bench/read_api_bench.py).
_FIELDS: dict[type, tuple[str, ...]] = {}


def encode(value: Any) -> Any:
    """A response dataclass (or any value of a supported type) as JSON-ready data."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: encode(getattr(value, name)) for name in names}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def _orjson_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError  # orjson then raises JSONEncodeError, and dumps falls back


def dumps(value: Any) -> bytes:
    """``orjson.dumps(encode(value))``, without building the intermediate dicts.

    orjson walks dataclasses, enums, dates and instants itself (``OPT_UTC_Z`` writes UTC
    as ``Z``, as :func:`encode` does); only ``Decimal`` goes through a default. A page of
    500 transactions was mostly :func:`encode`'s per-field Python (bench/README.md).
    Anything orjson refuses (a dict with non-string keys, say) takes the :func:`encode`
    path, so the output never differs; ``tests/aggregator/http/test_http_schema.py``
    checks the two agree on generated values.
    """
    try:
        return orjson.dumps(value, default=_orjson_default, option=orjson.OPT_UTC_Z)
    except orjson.JSONEncodeError:
        return orjson.dumps(encode(value))


# -- JSON Schema (2020-12, as OpenAPI 3.1 uses it) -------------------------------------


def json_schema(tp: Any, components: dict[str, Any], meta: Mapping[str, Any] | None = None,
                ) -> dict[str, Any]:
    """The schema of ``tp``; dataclasses go to ``components`` and are referenced."""
    extra = dict((meta or {}).get("schema", {}))
    tp, nullable = _strip_optional(tp)
    schema = {**_schema_of(tp, components), **extra}
    if nullable:
        if "$ref" in schema:
            return {"anyOf": [schema, {"type": "null"}]}
        kind = schema.get("type")
        schema["type"] = [kind, "null"] if isinstance(kind, str) else kind
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema


def _schema_of(tp: Any, components: dict[str, Any]) -> dict[str, Any]:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        name = tp.__name__
        if name not in components:
            components[name] = {}  # placeholder: recursion and repeated use stop here
            components[name] = object_schema(tp, components)
        return {"$ref": f"#/components/schemas/{name}"}
    origin = get_origin(tp)
    if origin is list:
        return {"type": "array", "items": json_schema(get_args(tp)[0], components)}
    if origin is dict:
        return {"type": "object",
                "additionalProperties": json_schema(get_args(tp)[1], components)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    simple: dict[Any, dict[str, Any]] = {
        str: {"type": "string"},
        int: {"type": "integer"},
        bool: {"type": "boolean"},
        Decimal: {"type": "string", "format": "decimal", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
        datetime: {"type": "string", "format": "date-time"},
        date: {"type": "string", "format": "date"},
    }
    if tp in simple:
        return dict(simple[tp])
    if tp is Any:
        return {}
    raise TypeError(f"{tp!r} has no JSON Schema mapping")


def object_schema(cls: type[Any], components: dict[str, Any]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    props = {
        f.name: json_schema(hints[f.name], components, f.metadata)
        for f in dataclasses.fields(cls)
    }
    required = [f.name for f in dataclasses.fields(cls) if _required(f)]
    schema: dict[str, Any] = {"type": "object", "properties": props,
                              "additionalProperties": False}
    if required:
        schema["required"] = required
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith(f"{cls.__name__}("):  # not the generated signature
        schema["description"] = " ".join(doc.split())
    return schema
