"""Pushed Authorization Requests (RFC 9126), which authlib does not implement.

§2: the client authenticates and posts the authorization parameters; they are checked
exactly as the authorization endpoint would check them, stored, and named by a
single-use, short-lived ``request_uri``. §4: the authorization endpoint then takes only
``client_id`` and ``request_uri`` and uses the pushed parameters, never the query's.
§5: with ``require_pushed_authorization_requests`` every other request is refused.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    Endpoint,
    InvalidRequestError,
    OAuth2Error,
)
from authlib.oauth2.rfc9101.errors import InvalidRequestUriError

from aggregator.sandbox.config import CLIENT_AUTH_METHODS
from aggregator.sandbox.requests import SandboxOAuth2Request
from aggregator.sandbox.store import SandboxClock

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"

# Client-authentication parameters are about the PAR call itself, not the authorization.
_CLIENT_AUTH_PARAMS = frozenset({"client_secret", "client_assertion", "client_assertion_type"})


@dataclass
class PushedRequest:
    client_id: str
    params: dict[str, str]
    expires_at: float


class PushedRequests:
    """The stored requests, plus the authorization-server hook that resolves them."""

    def __init__(self, clock: SandboxClock, ttl: int, required: bool) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, PushedRequest] = {}
        self.clock = clock
        self.ttl = ttl
        self.required = required

    def push(self, client_id: str, params: dict[str, str]) -> str:
        request_uri = REQUEST_URI_PREFIX + secrets.token_urlsafe(24)
        with self._lock:
            now = self.clock.now()
            for key in [k for k, r in self._requests.items() if r.expires_at <= now]:
                del self._requests[key]
            self._requests[request_uri] = PushedRequest(client_id, params, now + self.ttl)
        return request_uri

    def take(self, request_uri: str, client_id: str) -> dict[str, str] | None:
        """The pushed parameters, once. Another client's attempt does not burn them."""
        with self._lock:
            pushed = self._requests.get(request_uri)
            if pushed is None or pushed.client_id != client_id:
                return None
            del self._requests[request_uri]
        return pushed.params if pushed.expires_at > self.clock.now() else None

    def register(self, server: AuthorizationServer) -> None:
        server.register_hook("before_get_authorization_grant", self.resolve)

    def resolve(self, server: AuthorizationServer, request: SandboxOAuth2Request) -> None:
        if request.pushed:
            return
        data = request.payload.data
        request_uri = data.get("request_uri")
        if request_uri is None:
            if self.required:
                raise InvalidRequestError("This server requires pushed authorization requests.")
            return
        client_id = data.get("client_id")
        params = self.take(request_uri, client_id) if client_id else None
        if params is None:
            raise InvalidRequestUriError()
        request.payload = type(request.payload)(params.items())
        request.pushed = True


class PushedAuthorizationEndpoint(Endpoint):  # type: ignore[misc]
    """``POST /par``; answers 201 with ``request_uri`` and ``expires_in`` (§2.2)."""

    ENDPOINT_NAME = "pushed_authorization_request"
    CLIENT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)

    def __init__(self, server: AuthorizationServer, pushed: PushedRequests) -> None:
        super().__init__(server)
        self.pushed = pushed

    def create_endpoint_response(
        self, request: SandboxOAuth2Request
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client = self.server.authenticate_client(
            request, self.CLIENT_AUTH_METHODS, self.ENDPOINT_NAME
        )
        data = request.payload.data
        client_id = client.get_client_id()
        if "request_uri" in data:
            raise InvalidRequestError("'request_uri' is not allowed in a pushed request.")
        if data.get("client_id", client_id) != client_id:
            raise InvalidRequestError("'client_id' differs from the authenticated client.")
        items = [
            (key, value)
            for key, values in request.payload.datalist.items()
            if key not in _CLIENT_AUTH_PARAMS and key != "client_id"
            for value in values
        ]
        pushed = SandboxOAuth2Request(
            "POST", request.uri, request.headers, [("client_id", client_id), *items], pushed=True
        )
        self._validate(pushed)
        request_uri = self.pushed.push(client_id, dict(pushed.payload.data))
        body = {"request_uri": request_uri, "expires_in": self.pushed.ttl}
        return 201, body, default_json_headers

    def _validate(self, pushed: SandboxOAuth2Request) -> None:
        # §2.1: validate as the authorization endpoint would, but answer errors here, in
        # JSON (§2.3), never by redirecting to a URI we have not accepted yet.
        try:
            grant = self.server.get_authorization_grant(pushed)
            grant.validate_no_multiple_request_parameter(pushed)
            grant.validate_authorization_request()
        except OAuth2Error as error:
            error.redirect_uri = None
            raise
