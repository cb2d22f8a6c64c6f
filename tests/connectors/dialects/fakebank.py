"""A scripted bank behind ``httpx.MockTransport``: routes, recorded requests, echoed ids."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from connectors.models import Account, Balance, Transaction

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

Responder = Callable[[httpx.Request], httpx.Response]


def fixture_bytes(name: str) -> bytes:
    """The fixture file as the bank would send it, byte for byte."""
    return (FIXTURES / name).read_bytes()


class FakeBank:
    """Answers GETs by path (and, when given, exact query); everything else is a 404.

    Like a FAPI-conformant bank it echoes the request-id header it was sent, unless a
    route's response sets its own.
    """

    def __init__(self, echo_header: str) -> None:
        self.echo_header = echo_header
        self.requests: list[httpx.Request] = []
        self._routes: dict[tuple[str, Query | None], Responder] = {}

    def add(self, url: str, fixture: str, *, status: int = 200) -> None:
        """Serve ``fixture`` at ``url``; a URL with a query only matches that exact query."""
        body = fixture_bytes(fixture)
        self.route(url, lambda _: httpx.Response(status, content=body))

    def route(self, url: str, responder: Responder) -> None:
        self._routes[_key(httpx.URL(url))] = responder

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        where, query = _key(request.url)
        responder = self._routes.get((where, query)) or self._routes.get((where, None))
        response = responder(request) if responder else httpx.Response(404, json={})
        if self.echo_header not in response.headers and self.echo_header in request.headers:
            response.headers[self.echo_header] = request.headers[self.echo_header]
        return response

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


Query = tuple[tuple[str, str], ...]


def _key(url: httpx.URL) -> tuple[str, Query | None]:
    """Route key: origin and path, plus the decoded query (so ``%3A`` matches ``:``)."""
    query = tuple(sorted(url.params.multi_items())) or None
    return f"{url.scheme}://{url.netloc.decode()}{url.path}", query


def exact(models: Sequence[Account | Balance | Transaction]) -> list[list[tuple[str, str, str]]]:
    """Every field of every model as (name, type, str): ``Decimal("1.0") != "1.00"`` here.

    Dataclass equality would call ``Decimal("5")`` and ``Decimal("5.00")`` equal and compare
    datetimes across time zones; a golden test must also pin the scale and the zone.
    """
    return [
        [
            (f.name, type(getattr(m, f.name)).__name__, str(getattr(m, f.name)))
            for f in dataclasses.fields(m)
        ]
        for m in models
    ]
