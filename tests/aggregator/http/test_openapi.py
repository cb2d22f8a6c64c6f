"""/openapi.json describes every route of the app, from the same schemas that validate."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aggregator.http import ApiRoute, Call, Operation
from aggregator.http.app import create_app
from aggregator.http.openapi import UndocumentedRoute
from aggregator.http.views import Health
from aggregator.settings import Settings
from tests.aggregator.http.conftest import GATEWAY

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def openapi_of(settings: Settings) -> tuple[Any, dict[str, Any]]:
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=GATEWAY) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.oai.openapi+json"
    return app, json.loads(response.content)


async def test_every_route_of_the_app_is_documented_and_nothing_else(
    bare_settings: Settings,
) -> None:
    app, doc = await openapi_of(bare_settings)
    expected = {
        (route.path_format, method.lower())
        for route in app.routes if isinstance(route, Route) and route.include_in_schema
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {(p, m) for p, item in doc["paths"].items() for m in item if m in METHODS}
    assert documented == expected
    assert ("/v1/connections/{id}", "delete") in documented
    assert ("/v1/connections/{id}/transactions/sync", "get") in documented
    # 18 + erasure (2) + POST /webhooks/plaid/{region} + events (4) + POST /v1/plaid/exchange
    # + POST /link/callback (form post response mode) + POST /link/accounts (two-step)
    # + GET /v1/connections/{id}/syncs
    assert ("/v1/connections/{id}/syncs", "get") in documented
    assert len(documented) == 29
    assert ("/webhooks/plaid/{region}", "post") in documented


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


async def test_the_document_is_well_formed_openapi_31(bare_settings: Settings) -> None:
    _, doc = await openapi_of(bare_settings)
    assert doc["openapi"] == "3.1.0"
    for ref in refs(doc):
        assert resolve(doc, ref) is not None
    operation_ids = []
    for path, item in doc["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            operation_ids.append(op["operationId"])
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == templated, (path, method)
            assert op["responses"], (path, method)
            page = path.startswith("/link/")  # a person reads these: errors are HTML
            for status, response in op["responses"].items():
                assert re.fullmatch(r"[1-5][0-9][0-9]", status)
                assert response["description"]
                if int(status) >= 400:
                    (media,) = response["content"]
                    assert media == ("text/html" if page else "application/problem+json")
            is_v1 = path.startswith("/v1/")
            assert (op["security"] == [{"apiKey": []}]) is is_v1, path
            assert ("401" in op["responses"]) is is_v1, path
    assert len(operation_ids) == len(set(operation_ids))


async def test_request_and_response_schemas_are_the_validating_ones(
    bare_settings: Settings,
) -> None:
    _, doc = await openapi_of(bare_settings)
    create = doc["paths"]["/v1/users"]["post"]
    body = resolve(doc, create["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    assert body["additionalProperties"] is False
    assert body["required"] == ["external_id", "region"]
    assert body["properties"]["external_id"]["maxLength"] == 255
    assert set(create["responses"]) == {"201", "400", "401", "409", "413", "415", "422", "429",
                                       "500"}
    page = doc["paths"]["/v1/accounts/{id}/transactions"]["get"]
    limit = next(p for p in page["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 500}
    assert limit["required"] is False
    txn = doc["components"]["schemas"]["TransactionOut"]
    assert txn["properties"]["amount"]["format"] == "decimal"
    assert txn["properties"]["booked_on"]["type"] == ["string", "null"]


async def healthy(call: Call) -> Health:
    return Health("ok")


def test_an_undocumented_route_stops_the_app_from_being_built(bare_settings: Settings) -> None:
    async def page(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    with pytest.raises(UndocumentedRoute, match="/plain"):
        create_app(bare_settings, routes=[Route("/plain", page)])
    hidden = create_app(bare_settings, routes=[Route("/plain", page, include_in_schema=False)])
    assert "/plain" not in hidden.state.openapi["paths"]
    extra = create_app(bare_settings, routes=[ApiRoute("/extra", healthy, "GET", Operation(
        summary="An extra route", response=Health, auth=False))])
    assert "get" in extra.state.openapi["paths"]["/extra"]
