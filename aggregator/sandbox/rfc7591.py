"""Dynamic client registration at the sandbox bank: RFC 7591 (register), RFC 7592 (manage).

authlib's :class:`ClientRegistrationEndpoint` and :class:`ClientConfigurationEndpoint`
do the protocol; this module stores what they produce. Registration is open (no
initial access token, RFC 7591 §3), as befits a loopback-only development bank; each
registration answers with a ``registration_access_token`` (kept only as its SHA-256,
like every token here) and a ``registration_client_uri`` (``/register/{client_id}``)
with which the client reads, replaces (PUT) or deletes (DELETE) its registration.

A registered client is a :class:`~aggregator.sandbox.config.SandboxClient` like a
configured one; its ``client_name`` is what the sign-in and consent pages show
(RFC 7591 §2: "name of the client to be presented to the end-user").
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint, InvalidClientMetadataError
from authlib.oauth2.rfc7592 import ClientConfigurationEndpoint

from aggregator.errors import ConfigError
from aggregator.sandbox.config import CLIENT_AUTH_METHODS, SCOPES, SandboxClient
from aggregator.sandbox.discovery import server_metadata
from aggregator.sandbox.middleware import current_issuer
from aggregator.sandbox.models import ClientModel, digest

if TYPE_CHECKING:
    from aggregator.sandbox.authorization_server import SandboxAuthorizationServer

#: The longest ``client_name`` the sandbox keeps (a real bank caps it too).
MAX_CLIENT_NAME = 100


@dataclass(frozen=True)
class RegistrationToken:
    """The registration access token of one client (RFC 7592 §1), by its digest."""

    client_id: str

    def check_client(self, client: ClientModel) -> bool:
        return self.client_id == client.get_client_id()


class _OpenRegistration:
    """The credential of an open registration request: anyone on this machine."""


def _client_from(client_id: str, secret: str | None, metadata: dict[str, Any]) -> SandboxClient:
    method = metadata.get("token_endpoint_auth_method") or "client_secret_basic"
    if method not in CLIENT_AUTH_METHODS:
        raise InvalidClientMetadataError(f"token_endpoint_auth_method {method!r} unsupported")
    name = metadata.get("client_name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_CLIENT_NAME):
        raise InvalidClientMetadataError(f"client_name: at most {MAX_CLIENT_NAME} characters")
    scope = metadata.get("scope")
    scopes = tuple(scope.split()) if isinstance(scope, str) and scope else SCOPES
    try:
        return SandboxClient(
            client_id=client_id,
            client_secret=secret if method != "private_key_jwt" else None,
            redirect_uris=tuple(metadata.get("redirect_uris") or ()),
            auth_methods=(method,),
            jwks=metadata.get("jwks"),
            scopes=scopes,
            client_name=name,
        )
    except ConfigError as exc:
        raise InvalidClientMetadataError(str(exc)) from None


class SandboxRegistrationEndpoint(ClientRegistrationEndpoint):  # type: ignore[misc]
    """RFC 7591 §3: ``POST /register`` with the client's metadata as JSON."""

    server: SandboxAuthorizationServer

    def authenticate_token(self, request: Any) -> _OpenRegistration:
        return _OpenRegistration()

    def get_server_metadata(self) -> dict[str, Any]:
        return server_metadata(current_issuer(), self.server.config)

    def generate_client_id(self, request: Any) -> str:
        return "dcr-" + secrets.token_urlsafe(12)

    def save_client(
        self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any
    ) -> ClientModel:
        settings = _client_from(
            client_info["client_id"], client_info["client_secret"], client_metadata
        )
        model = self.server.add_client(settings, client_info, client_metadata)
        if settings.client_secret is None:
            client_info.pop("client_secret", None)  # RFC 7591 §3.2.1: none for JWT clients
            client_info.pop("client_secret_expires_at", None)
        return model

    def generate_client_registration_info(
        self, client: ClientModel, request: Any
    ) -> dict[str, str]:
        return self.server.registration_info(client.get_client_id())


class SandboxConfigurationEndpoint(ClientConfigurationEndpoint):  # type: ignore[misc]
    """RFC 7592 §2: GET, PUT and DELETE on ``/register/{client_id}``."""

    server: SandboxAuthorizationServer

    def authenticate_token(self, request: Any) -> RegistrationToken:
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        found = (
            self.server.registration_tokens.get(digest(token.strip()))
            if scheme.lower() == "bearer" and token
            else None
        )
        if found is None:  # RFC 7592 §2 (RFC 6750 §3.1): 401, not authlib's 400
            raise InvalidClientError(
                status_code=401, description="unknown registration access token"
            )
        return found

    def authenticate_client(self, request: Any) -> ClientModel | None:
        client_id = request.uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return self.server.registered.get(client_id)

    def revoke_access_token(self, request: Any, token: RegistrationToken) -> None:
        self.server.drop_registration_tokens(token.client_id)

    def check_permission(self, client: ClientModel, request: Any) -> bool:
        return True

    def get_server_metadata(self) -> dict[str, Any]:
        return server_metadata(current_issuer(), self.server.config)

    def introspect_client(self, client: ClientModel) -> dict[str, Any]:
        info = dict(client.client_info)
        if client.settings.client_secret is None:
            info.pop("client_secret", None)
        return {**info, **client.client_metadata}

    def generate_client_registration_info(
        self, client: ClientModel, request: Any
    ) -> dict[str, str]:
        # RFC 7592 §3: the token may be rotated on a read or update; this bank keeps it.
        token = request.headers.get("Authorization", "").partition(" ")[2].strip()
        return {
            "registration_client_uri": self.server.registration_uri(client.get_client_id()),
            "registration_access_token": token,
        }

    def delete_client(self, client: ClientModel, request: Any) -> None:
        self.server.remove_client(client.get_client_id())

    def update_client(
        self, client: ClientModel, client_metadata: dict[str, Any], request: Any
    ) -> ClientModel:
        if "redirect_uris" not in client_metadata:
            # RFC 7592 §2.2: omitted fields are deleted; a redirect-based client needs these.
            raise InvalidRequestError("redirect_uris is required")
        settings = _client_from(
            client.get_client_id(), client.settings.client_secret, client_metadata
        )
        return self.server.add_client(settings, client.client_info, client_metadata)


def registered_model(
    settings: SandboxClient, client_info: dict[str, Any], client_metadata: dict[str, Any]
) -> ClientModel:
    """A :class:`ClientModel` remembering what its registration said (for RFC 7592 reads)."""
    model = ClientModel(settings)
    model.client_info = {k: v for k, v in client_info.items() if k != "client_secret"}
    if settings.client_secret is not None:
        model.client_info["client_secret"] = settings.client_secret
    model.client_metadata = dict(client_metadata)
    return model
