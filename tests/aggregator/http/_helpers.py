"""Assertions shared by the HTTP tests."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from aggregator.http.schema import decode
from aggregator.models.base import Base
from aggregator.store import RegionRouter


def assert_problem(response: httpx.Response, status: int, code: str | None = None
                   ) -> dict[str, Any]:
    """The response is an RFC 9457 problem with a request id matching the header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["type"] == f"/problems/{code}", body
    return body


def parsed(cls: type[Any], response: httpx.Response, status: int = 200) -> Any:
    """The JSON body, checked against the dataclass the OpenAPI document names."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return decode(cls, response.json())


async def count_rows(router: RegionRouter, model: type[Base]) -> dict[str, int]:
    out = {}
    for region in router.regions:
        async with router.reader(region) as session:
            out[region] = (await session.execute(
                select(func.count()).select_from(model)
            )).scalar_one()
    return out
