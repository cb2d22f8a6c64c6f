"""Starlette requests as authlib's server code wants them.

authlib's grants are synchronous and read ``request.form`` as a plain mapping, while
Starlette parses bodies asynchronously; so the body is read once, up front, and the
authlib request is built from the parsed values.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping

from authlib.oauth2.rfc6749 import JsonPayload, JsonRequest, OAuth2Payload, OAuth2Request
from starlette.datastructures import Headers, UploadFile
from starlette.requests import Request


class ParsedPayload(OAuth2Payload):  # type: ignore[misc]
    """Request parameters as a first-value mapping plus every value of each name."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in items:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class SandboxOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """An authlib request over already-parsed parameters.

    ``pushed`` marks parameters that came from (or are going into) a pushed
    authorization request, so the RFC 9126 checks run once, not at every step.
    """

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        params: Iterable[tuple[str, str]],
        *,
        pushed: bool = False,
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = ParsedPayload(params)
        self.pushed = pushed

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data if self.method == "GET" else {}

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data if self.method != "GET" else {}


async def read_oauth2_request(request: Request) -> SandboxOAuth2Request:
    """Query parameters for GET, form fields for POST; file uploads are ignored."""
    if request.method == "GET":
        params = list(request.query_params.multi_items())
    else:
        async with request.form() as form:
            params = [(k, v) for k, v in form.multi_items() if not isinstance(v, UploadFile)]
    return SandboxOAuth2Request(
        request.method, str(request.url), Headers(scope=request.scope), params
    )


class ParsedJsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, data: object) -> None:
        self._data = data

    @property
    def data(self) -> object:
        return self._data


async def read_json_request(request: Request) -> JsonRequest:
    """A JSON-bodied request for authlib (kept for endpoints such as RFC 7591 ones)."""
    json_request = JsonRequest(request.method, str(request.url), Headers(scope=request.scope))
    body = await request.body()
    # RFC 7592 §2.1, §2.3: a read or a delete carries no body.
    json_request.payload = ParsedJsonPayload(json.loads(body) if body else {})
    return json_request
