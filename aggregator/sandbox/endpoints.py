"""Back-channel endpoints: token, PAR, revocation, discovery, JWKS, and the admin API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authlib.oauth2.rfc6749 import InsecureTransportError
from joserfc.jwk import ECKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.errors import ConfigError
from aggregator.sandbox.authorization_server import SandboxAuthorizationServer
from aggregator.sandbox.config import Faults
from aggregator.sandbox.discovery import server_metadata
from aggregator.sandbox.faults import FaultInjector
from aggregator.sandbox.middleware import current_issuer
from aggregator.sandbox.requests import (
    SandboxOAuth2Request,
    read_json_request,
    read_oauth2_request,
)


class OAuthViews:
    def __init__(self, server: SandboxAuthorizationServer, signing_key: ECKey) -> None:
        self.server = server
        self.public_jwk = signing_key.as_dict(private=False)

    async def token(self, request: Request) -> Response:
        return await self._call(request, self.server.create_token_response)

    async def pushed_authorization(self, request: Request) -> Response:
        return await self._call(
            request,
            lambda r: self.server.create_endpoint_response("pushed_authorization_request", r),
        )

    async def revoke(self, request: Request) -> Response:
        return await self._call(
            request, lambda r: self.server.create_endpoint_response("revocation", r)
        )

    async def register(self, request: Request) -> Response:
        """RFC 7591 §3: register a client from its JSON metadata."""
        return await self._json(request, "client_registration")

    async def configure(self, request: Request) -> Response:
        """RFC 7592 §2: read, replace or delete a registration with its access token."""
        return await self._json(request, "client_configuration")

    async def _json(self, request: Request, endpoint: str) -> Response:
        try:
            json_request = await read_json_request(request)
        except ValueError:
            return JSONResponse({"error": "invalid_request",
                                 "error_description": "the body is not JSON"}, 400)
        with self.server.store.lock:
            response: Response = self.server.create_endpoint_response(endpoint, json_request)
        return response

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(server_metadata(current_issuer(), self.server.config))

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.public_jwk]})

    async def _call(
        self, request: Request, endpoint: Callable[[SandboxOAuth2Request], Any]
    ) -> Response:
        try:
            oauth_request = await read_oauth2_request(request)
        except InsecureTransportError as error:
            response: Response = self.server.handle_error_response(None, error)
            return response
        with self.server.store.lock:
            response = endpoint(oauth_request)
        return response


class AdminViews:
    """``/_sandbox/...``: fault switches, the ledger's day and the token clock."""

    def __init__(
        self,
        injector: FaultInjector,
        advance_day: Callable[[], None],
        advance_clock: Callable[[float], None],
    ) -> None:
        self.injector = injector
        self.advance_day_fn = advance_day
        self.advance_clock_fn = advance_clock

    def routes(self) -> list[Route]:
        return [
            Route("/faults", self.get_faults, methods=["GET"]),
            Route("/faults", self.set_faults, methods=["POST"]),
            Route("/advance-day", self.advance_day, methods=["POST"]),
            Route("/advance-clock", self.advance_clock, methods=["POST"]),
        ]

    async def get_faults(self, request: Request) -> Response:
        return JSONResponse(self.injector.faults.to_json())

    async def set_faults(self, request: Request) -> Response:
        """Replaces every switch: fields left out take their defaults; ``{}`` resets."""
        try:
            self.injector.faults = Faults.from_json(await request.json())
        except (ValueError, ConfigError) as exc:
            return JSONResponse({"error": "invalid_request", "detail": str(exc)}, 400)
        return JSONResponse(self.injector.faults.to_json())

    async def advance_day(self, request: Request) -> Response:
        self.advance_day_fn()
        return JSONResponse({"advanced": "1 day"})

    async def advance_clock(self, request: Request) -> Response:
        try:
            seconds = float((await request.json())["seconds"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "invalid_request", "detail": "need seconds"}, 400)
        if seconds < 0:
            return JSONResponse({"error": "invalid_request", "detail": "only forward"}, 400)
        self.advance_clock_fn(seconds)
        return JSONResponse({"advanced_seconds": seconds})
