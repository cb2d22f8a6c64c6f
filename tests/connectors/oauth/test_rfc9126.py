"""Pushed authorization requests: the endpoint's answers and the resulting URL."""

from __future__ import annotations

import httpx
import pytest

from connectors import BankMisconfigured, BankProtocolError, BankUnavailable, ConnectorError
from connectors.oauth.rfc9126 import authorization_url, push_authorization_request


async def _push(reply: httpx.Response) -> object:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        result = await push_authorization_request(
            http,
            "https://bank.test/par",
            {"client_id": "c", "state": "s"},
            auth=httpx.BasicAuth("c", "secret"),
            http_timeout=httpx.Timeout(5.0),
            bank="bank",
        )
    assert seen[0].method == "POST"
    assert seen[0].headers["content-type"] == "application/x-www-form-urlencoded"
    return result


@pytest.mark.parametrize("status", [201, 200])
async def test_success_returns_the_reference(status: int) -> None:
    pushed = await _push(httpx.Response(status, json={"request_uri": "urn:r:1", "expires_in": 90}))

    assert pushed.request_uri == "urn:r:1"  # type: ignore[attr-defined]
    assert pushed.expires_in == 90  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (httpx.Response(400, json={"error": "invalid_request"}), BankProtocolError),
        (httpx.Response(401, json={"error": "invalid_client"}), BankMisconfigured),
        (httpx.Response(403, text="forbidden"), BankProtocolError),
        (httpx.Response(503, headers={"Retry-After": "10"}), BankUnavailable),
        (httpx.Response(429), BankUnavailable),
        (httpx.Response(201, json={"expires_in": 90}), BankProtocolError),
        (httpx.Response(201, json={"request_uri": "urn:r", "expires_in": "90"}), BankProtocolError),
        (httpx.Response(201, json={"request_uri": "urn:r", "expires_in": 0}), BankProtocolError),
        (httpx.Response(201, text="ok"), BankProtocolError),
    ],
)
async def test_bad_answers_are_typed_errors(
    reply: httpx.Response, error: type[ConnectorError]
) -> None:
    with pytest.raises(error):
        await _push(reply)


def test_authorization_url_keeps_the_endpoints_own_query() -> None:
    url = authorization_url(
        "https://bank.test/authorize?tenant=7", {"client_id": "c", "request_uri": "urn:r:1"}
    )

    assert url == "https://bank.test/authorize?tenant=7&client_id=c&request_uri=urn%3Ar%3A1"
