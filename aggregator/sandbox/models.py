"""The objects authlib's server code asks about: clients, authorization codes, tokens.

Tokens, codes and refresh tokens are kept only as SHA-256 digests, like a real bank
would, so nothing in memory or in a debugger view spells a usable credential.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, list_to_scope, scope_to_list
from authlib.oidc.core import AuthorizationCodeMixin
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey, import_key

from aggregator.errors import ConfigError
from aggregator.sandbox.config import SandboxClient

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def digest(secret: str) -> str:
    """The lookup key for a token or code: its SHA-256, never the value itself."""
    return hashlib.sha256(secret.encode()).hexdigest()


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Exact match, except that a loopback URI may use any port (RFC 8252 §7.3)."""
    if registered == requested:
        return True
    reg, req = urlsplit(registered), urlsplit(requested)
    if reg.scheme != "http" or reg.hostname not in _LOOPBACK_HOSTS:
        return False
    try:
        req.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return (reg.scheme, reg.hostname, reg.path, reg.query, reg.fragment) == (
        req.scheme,
        req.hostname,
        req.path,
        req.query,
        req.fragment,
    ) and not req.username


def load_public_keys(client_id: str, jwks: Mapping[str, Any] | str) -> ECKey | RSAKey | KeySet:
    """Turn a client's registered JWK set, JWK or PEM into a joserfc key to verify with."""
    try:
        if isinstance(jwks, str):
            native = load_pem_public_key(jwks.encode())
            if isinstance(native, ec.EllipticCurvePublicKey):
                return ECKey.import_key(native)
            if isinstance(native, rsa.RSAPublicKey):
                return RSAKey.import_key(native)
            raise ConfigError(f"sandbox client {client_id}: only EC and RSA keys are supported")
        if "keys" in jwks:
            keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        else:
            keys = KeySet([import_key(dict(jwks))])
    except (ValueError, TypeError, KeyError, JoseError) as exc:
        raise ConfigError(f"sandbox client {client_id}: unreadable jwks") from exc
    if any(key.is_private for key in keys.keys):
        raise ConfigError(f"sandbox client {client_id}: register the public key only")
    return keys


class ClientModel(ClientMixin):  # type: ignore[misc]
    """A registered client as authlib's grants and endpoints query it."""

    def __init__(self, settings: SandboxClient) -> None:
        self.settings = settings
        self.client_id = settings.client_id
        self.public_keys = (
            load_public_keys(settings.client_id, settings.jwks) if settings.jwks else None
        )

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.settings.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return "accounts"
        allowed = set(self.settings.scopes)
        # A resource scope ("AIS:{consentId}") was checked by the server's scope hooks.
        kept = [s for s in scope_to_list(scope) if s in allowed or ":" in s]
        return str(list_to_scope(kept))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(redirect_uri_matches(r, redirect_uri) for r in self.settings.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        expected = self.settings.client_secret
        return expected is not None and secrets.compare_digest(
            expected.encode(), client_secret.encode()
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in self.settings.auth_methods

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):  # type: ignore[misc]
    """An issued code; kept after use so a replay can revoke what it produced."""

    code_hash: str
    client_id: str
    redirect_uri: str | None
    scope: str
    user: str
    code_challenge: str
    code_challenge_method: str
    nonce: str | None
    auth_time: int
    expires_at: float
    used: bool = False
    grant_id: str | None = None
    #: RFC 9449 §10: the thumbprint of the DPoP key the code is bound to, if one was sent.
    dpop_jkt: str | None = None

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str] | None:
        return None


@dataclass
class Grant:
    """One consent: the chain of tokens issued from one authorization code."""

    grant_id: str
    client_id: str
    user: str
    scope: str
    revoked: bool = False
    token_ids: list[str] = field(default_factory=list)


@dataclass
class TokenRecord(TokenMixin):  # type: ignore[misc]
    """One token response: an access token and, usually, its refresh token."""

    token_id: str
    grant_id: str
    client_id: str
    user: str
    scope: str
    access_hash: str
    refresh_hash: str | None
    issued_at: float
    expires_in: int
    refresh_expires_at: float | None
    access_revoked: bool = False
    #: "active" until rotated ("used") or revoked ("revoked").
    refresh_state: str = "active"

    def check_client(self, client: ClientModel) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def get_user(self) -> str:
        return self.user


@dataclass
class RevocationTarget:
    """What a revocation request named: which record, and which of its two tokens."""

    record: TokenRecord
    kind: str  # "access_token" or "refresh_token"

    def check_client(self, client: ClientModel) -> bool:
        return self.record.check_client(client)
