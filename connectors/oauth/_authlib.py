"""authlib's async OAuth2 client, adapted to send through an injected httpx client.

authlib's ``AsyncOAuth2Client`` *is* an ``httpx.AsyncClient``; we want one shared,
configured client per process (docs/architecture.md, "Performance notes"), swapped
for a mock transport in tests. So each call builds a throw-away authlib client whose
``post`` delegates to the injected one; it keeps no token between calls, so concurrent
calls cannot see each other's tokens. Its own transport refuses every request, so a code
path that bypassed the delegation would fail loudly instead of opening unconfigured
connections.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # authlib 1.9 prefers the `httpx2` package and warns when it falls back to `httpx`;
    # the project pins httpx 0.28 (the rest of the stack and our injected client use it).
    warnings.filterwarnings(
        "ignore", message="The httpx module is deprecated", category=AuthlibDeprecationWarning
    )
    from authlib.integrations.httpx_client import AsyncOAuth2Client

__all__ = ["AuthlibClient", "ResponseHook"]

ResponseHook = Callable[[httpx.Response], httpx.Response]


def _refuse(request: httpx.Request) -> httpx.Response:
    raise RuntimeError("authlib tried to send outside the injected httpx client")


_REFUSING_TRANSPORT = httpx.MockTransport(_refuse)


class AuthlibClient(AsyncOAuth2Client):  # type: ignore[misc]
    """One call's authlib client; see the module docstring."""

    def __init__(self, http: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(transport=_REFUSING_TRANSPORT, trust_env=False, **kwargs)
        self._bank_http = http

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = await self._bank_http.post(url, **kwargs)
        return response
