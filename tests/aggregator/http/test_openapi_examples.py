"""Every operation on `/docs` shows a whole example request and response, and every
example is valid: against its schema (JSON Schema 2020-12, jsonschema) and, for request
bodies, against the decoder that validates real requests."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from aggregator.http.app import gateway_routes
from aggregator.http.examples import EXAMPLE_REQUEST_ID, media_types
from aggregator.http.openapi import build_openapi
from aggregator.http.problems import MEDIA_TYPE
from aggregator.http.routing import ApiRoute
from aggregator.http.schema import decode


@cache
def document() -> dict[str, Any]:
    return build_openapi(gateway_routes(), title="t", version="0")


def operations() -> list[tuple[str, str]]:
    return [(path, method) for path, item in document()["paths"].items() for method in item]


def check(example: Any, schema: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``example`` satisfies ``schema``.

    The schema's ``$ref``s point into ``#/components``: the components ride along at the
    root (2020-12 ignores a keyword it does not know), so they resolve as in the document.
    """
    root = {**schema, "components": document()["components"]}
    Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
        example)


@pytest.mark.parametrize(("path", "method"), operations())
def test_every_operation_has_whole_examples_that_fit_their_schemas(path: str,
                                                                   method: str) -> None:
    op = document()["paths"][path][method]
    found: dict[str, Any] = {}
    for where, media in media_types(op):
        assert "example" in media, f"{method.upper()} {path}: no example for {where}"
        check(media["example"], media["schema"])
        found.setdefault(where, media["example"])
    if "requestBody" in op:
        assert "request" in found
    success = [s for s in op["responses"] if int(s) < 400]
    assert all(s in found or "content" not in op["responses"][s] for s in success)
    problems = [s for s in found if s != "request" and int(s) >= 400]
    assert problems, f"{method.upper()} {path}: no problem example"


def test_problem_examples_are_what_the_gateway_renders_for_that_status() -> None:
    users = document()["paths"]["/v1/users/{id}"]["get"]["responses"]
    example = users["404"]["content"][MEDIA_TYPE]["example"]
    assert example["status"] == 404
    assert example["type"] == "/problems/not_found"
    assert example["instance"].startswith("/v1/users/usr_eu_")
    assert example["request_id"] == EXAMPLE_REQUEST_ID
    invalid = document()["paths"]["/v1/users"]["post"]["responses"]["422"]
    (error,) = invalid["content"][MEDIA_TYPE]["example"]["errors"]
    assert error["pointer"] == "#/external_id"


@pytest.mark.parametrize("route", [
    r for r in gateway_routes() if isinstance(r, ApiRoute) and r.operation.body is not None
], ids=lambda r: f"{sorted(r.methods or ())[0]} {r.path}")
def test_every_request_example_passes_the_validation_real_requests_get(route: ApiRoute) -> None:
    (method,) = (route.methods or set()) - {"HEAD"}
    op = document()["paths"][route.path][method.lower()]
    example = op["requestBody"]["content"]["application/json"]["example"]
    assert route.operation.body is not None
    decode(route.operation.body, example)


def test_the_check_refuses_an_example_that_breaks_its_schema() -> None:
    """The validator is wired to the document: a drifted example would fail the suite."""
    media = document()["paths"]["/v1/users"]["post"]["requestBody"]["content"][
        "application/json"]
    broken = copy.deepcopy(media["example"])
    broken["region"] = "EU!"
    with pytest.raises(jsonschema.ValidationError):
        check(broken, media["schema"])
    check(media["example"], media["schema"])
