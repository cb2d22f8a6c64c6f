"""Dynamic client registration, client side: RFC 7591 §3 (register) and RFC 7592 §2
(read, update and delete with the registration access token).

authlib implements only the server side of these RFCs, so the three requests are ours,
each one call through the injected ``httpx.AsyncClient`` inside
:func:`~connectors.oauth.boundary.map_bank_errors`. The client secret and the
registration access token come back wrapped in :class:`vault.Secret` (masked ``repr``);
no message here ever holds them, nor the bank's free-text error description.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.errors import MISCONFIGURATIONS, BankMisconfigured, BankProtocolError
from connectors.oauth.boundary import error_code, map_bank_errors, raise_for_unavailable
from vault import Secret

__all__ = [
    "ClientMetadata",
    "ClientRegistration",
    "delete_client",
    "register_client",
    "update_client",
]

_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclass(frozen=True)
class ClientMetadata:
    """What the gateway asks a bank to register (RFC 7591 §2)."""

    client_name: str
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    response_types: tuple[str, ...] = ("code",)
    scope: str | None = None
    #: The public key set of a ``private_key_jwt`` client (§2: ``jwks``).
    jwks: Mapping[str, Any] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_name": self.client_name,
            "redirect_uris": list(self.redirect_uris),
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "grant_types": list(self.grant_types),
            "response_types": list(self.response_types),
        }
        if self.scope:
            body["scope"] = self.scope
        if self.jwks is not None:
            body["jwks"] = dict(self.jwks)
        return body


@dataclass(frozen=True)
class ClientRegistration:
    """A bank's answer to a registration (RFC 7591 §3.2.1, RFC 7592 §3)."""

    client_id: str
    client_name: str | None
    client_secret: Secret | None = field(default=None, repr=False)
    registration_access_token: Secret | None = field(default=None, repr=False)
    registration_client_uri: str | None = None


async def register_client(
    http: httpx.AsyncClient,
    endpoint: str,
    metadata: ClientMetadata,
    *,
    bank: str,
    http_timeout: httpx.Timeout | float = 10.0,
) -> ClientRegistration:
    """RFC 7591 §3.1: POST the metadata; a 201 carries the new client."""
    with map_bank_errors(bank, "client registration"):
        response = await http.post(
            endpoint, json=metadata.to_json(), headers=_JSON, timeout=http_timeout
        )
    return _registration(response, bank, "client registration", expect=201)


async def update_client(
    http: httpx.AsyncClient,
    current: ClientRegistration,
    metadata: ClientMetadata,
    *,
    bank: str,
    http_timeout: httpx.Timeout | float = 10.0,
) -> ClientRegistration:
    """RFC 7592 §2.2: PUT the whole metadata again (omitted fields are deleted), with
    ``client_id`` and the current ``client_secret``; the answer may rotate either
    credential, and what it leaves out is kept."""
    uri, token = _managed(current, bank)
    body = {**metadata.to_json(), "client_id": current.client_id}
    if current.client_secret is not None:
        body["client_secret"] = current.client_secret.reveal()
    with map_bank_errors(bank, "client update"):
        response = await http.put(
            uri,
            json=body,
            timeout=http_timeout,
            headers={**_JSON, "Authorization": f"Bearer {token}"},
        )
    updated = _registration(response, bank, "client update", expect=200)
    return ClientRegistration(
        client_id=current.client_id,
        client_name=updated.client_name,
        client_secret=updated.client_secret or current.client_secret,
        registration_access_token=(
            updated.registration_access_token or current.registration_access_token
        ),
        registration_client_uri=updated.registration_client_uri or uri,
    )


async def delete_client(
    http: httpx.AsyncClient,
    current: ClientRegistration,
    *,
    bank: str,
    http_timeout: httpx.Timeout | float = 10.0,
) -> None:
    """RFC 7592 §2.3: DELETE the registration; a 401 after it means it is gone already
    (the server revokes the token with the client), which is success here too."""
    uri, token = _managed(current, bank)
    with map_bank_errors(bank, "client deletion"):
        response = await http.delete(
            uri, timeout=http_timeout, headers={"Authorization": f"Bearer {token}"}
        )
    raise_for_unavailable(response, bank, "client deletion")
    if response.status_code in (204, 200, 401, 404, 410):
        return
    raise BankProtocolError(f"{bank}: client deletion: HTTP {response.status_code}")


def _managed(current: ClientRegistration, bank: str) -> tuple[str, str]:
    if current.registration_client_uri is None or current.registration_access_token is None:
        raise BankProtocolError(
            f"{bank}: the registration of {current.client_id} cannot be "
            "managed (no registration_client_uri or access token)"
        )
    return current.registration_client_uri, current.registration_access_token.reveal()


def _registration(
    response: httpx.Response, bank: str, operation: str, *, expect: int
) -> ClientRegistration:
    raise_for_unavailable(response, bank, operation)
    body = _json(response)
    if response.status_code != expect:
        code = error_code(body.get("error")) if body else ""
        message = f"{bank}: {operation}: HTTP {response.status_code} {code}".rstrip()
        if response.status_code in (400, 401, 403):  # RFC 7591 §3.2.2: our metadata
            raise BankMisconfigured(
                message,
                reason="registration_refused",
                setting=MISCONFIGURATIONS["registration_refused"],
            )
        raise BankProtocolError(message)
    client_id = body.get("client_id") if body else None
    if not isinstance(client_id, str) or not client_id:
        raise BankProtocolError(f"{bank}: {operation}: the answer names no client_id")
    return ClientRegistration(
        client_id=client_id,
        client_name=_text(body, "client_name"),
        client_secret=_secret(body, "client_secret"),
        registration_access_token=_secret(body, "registration_access_token"),
        registration_client_uri=_text(body, "registration_client_uri"),
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def _secret(body: Mapping[str, Any], key: str) -> Secret | None:
    value = _text(body, key)
    return Secret(value) if value is not None else None
