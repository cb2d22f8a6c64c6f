"""Authorization server metadata discovery, RFC 8414 with the OpenID Connect fallback.

The client learns a bank's endpoints and capabilities (PKCE methods, PAR, the RFC 9207
``iss`` parameter, client authentication methods) from its metadata document. RFC 8414
§3.3 requires the document's ``issuer`` to equal the configured issuer exactly: a
document answering for another issuer is how a mix-up or impersonation starts, so it is
refused with :class:`~connectors.errors.IssuerMismatch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from connectors._schema import url_problem
from connectors.errors import BankProtocolError, IssuerMismatch
from connectors.oauth.boundary import map_bank_errors, raise_for_unavailable

__all__ = ["ServerMetadata", "discovery_urls", "fetch_metadata", "parse_metadata"]

OAUTH_WELL_KNOWN = "/.well-known/oauth-authorization-server"  # RFC 8414 §3.1
OPENID_WELL_KNOWN = "/.well-known/openid-configuration"  # OpenID Connect Discovery §4


@dataclass(frozen=True, kw_only=True)
class ServerMetadata:
    """What a bank's authorization server says about itself (RFC 8414 §2, RFC 9126 §5,
    RFC 9207 §3), with the RFC defaults applied to omitted fields.

    `source` is the URL the document came from, or ``"profile"`` when the profile
    disables discovery and lists the endpoints itself.
    """

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    source: str
    pushed_authorization_request_endpoint: str | None = None
    require_pushed_authorization_requests: bool = False
    revocation_endpoint: str | None = None
    jwks_uri: str | None = None
    response_types_supported: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] | None = None
    #: RFC 8414 §2: omitted means the server does not support PKCE.
    code_challenge_methods_supported: tuple[str, ...] = ()
    #: RFC 8414 §2: omitted means client_secret_basic.
    token_endpoint_auth_methods_supported: tuple[str, ...] = ("client_secret_basic",)
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] = ()
    revocation_endpoint_auth_methods_supported: tuple[str, ...] = ("client_secret_basic",)
    authorization_response_iss_parameter_supported: bool = False
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)


def discovery_urls(issuer: str) -> tuple[str, str]:
    """The RFC 8414 and OpenID Connect well-known URLs of `issuer`, in the order tried.

    RFC 8414 §3.1 inserts the well-known segment between host and path
    (``https://a.example/tenant`` → ``https://a.example/.well-known/…/tenant``); OpenID
    Connect Discovery appends it to the issuer.
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, OAUTH_WELL_KNOWN + path, "", ""))
    return rfc8414, issuer.rstrip("/") + OPENID_WELL_KNOWN


async def fetch_metadata(
    http: httpx.AsyncClient, issuer: str, *, http_timeout: httpx.Timeout, bank: str = ""
) -> ServerMetadata:
    """Fetch and validate `issuer`'s metadata, trying RFC 8414 first, then OpenID.

    A 4xx or a non-JSON answer at the first URL moves on to the next; a 5xx, 429 or
    network failure is :class:`~connectors.errors.BankUnavailable` at once.
    """
    label = bank or issuer
    for url in discovery_urls(issuer):
        with map_bank_errors(label, "discovery"):
            response = await http.get(
                url, timeout=http_timeout, headers={"Accept": "application/json"}
            )
        raise_for_unavailable(response, label, "discovery")
        if response.status_code != 200:
            continue
        try:
            document = response.json()
        except ValueError:
            continue
        return parse_metadata(document, expected_issuer=issuer, source=url)
    tried = " or ".join(discovery_urls(issuer))
    raise BankProtocolError(f"{label}: discovery: no metadata document at {tried}")


def parse_metadata(document: object, *, expected_issuer: str, source: str) -> ServerMetadata:
    """Validate a decoded metadata document; raise for anything a client cannot trust."""
    if not isinstance(document, dict):
        raise BankProtocolError(f"discovery: {source} is not a JSON object")
    reader = _Reader(document, source)
    issuer = document.get("issuer")
    if issuer != expected_issuer:
        # RFC 8414 §3.3: identical, no normalisation (a trailing "/" is a different issuer).
        raise IssuerMismatch(
            f"discovery: {source} names issuer {issuer!r}, expected {expected_issuer!r}"
        )
    response_types = reader.strings("response_types_supported", ())
    if response_types and not any("code" in rt.split() for rt in response_types):
        raise BankProtocolError(f"discovery: {source}: response type 'code' not supported")
    return ServerMetadata(
        issuer=expected_issuer,
        source=source,
        authorization_endpoint=reader.url("authorization_endpoint", required=True) or "",
        token_endpoint=reader.url("token_endpoint", required=True) or "",
        pushed_authorization_request_endpoint=reader.url("pushed_authorization_request_endpoint"),
        require_pushed_authorization_requests=reader.flag("require_pushed_authorization_requests"),
        revocation_endpoint=reader.url("revocation_endpoint"),
        jwks_uri=reader.url("jwks_uri"),
        response_types_supported=response_types,
        scopes_supported=reader.optional_strings("scopes_supported"),
        code_challenge_methods_supported=reader.strings("code_challenge_methods_supported", ()),
        token_endpoint_auth_methods_supported=reader.strings(
            "token_endpoint_auth_methods_supported", ("client_secret_basic",)
        ),
        token_endpoint_auth_signing_alg_values_supported=reader.strings(
            "token_endpoint_auth_signing_alg_values_supported", ()
        ),
        revocation_endpoint_auth_methods_supported=reader.strings(
            "revocation_endpoint_auth_methods_supported", ("client_secret_basic",)
        ),
        authorization_response_iss_parameter_supported=reader.flag(
            "authorization_response_iss_parameter_supported"
        ),
        raw=MappingProxyType(dict(document)),
    )


class _Reader:
    def __init__(self, document: Mapping[str, Any], source: str) -> None:
        self._doc = document
        self._source = source

    def _fail(self, name: str, problem: str) -> BankProtocolError:
        return BankProtocolError(f"discovery: {self._source}: {name} {problem}")

    def url(self, name: str, *, required: bool = False) -> str | None:
        value = self._doc.get(name)
        if value is None:
            if required:
                raise self._fail(name, "is missing")
            return None
        if not isinstance(value, str):
            raise self._fail(name, "is not a string")
        problem = url_problem(value)
        if problem:
            raise self._fail(name, problem)
        return value

    def flag(self, name: str) -> bool:
        value = self._doc.get(name, False)
        if not isinstance(value, bool):
            raise self._fail(name, "is not a boolean")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        found = self.optional_strings(name)
        return default if found is None else found

    def optional_strings(self, name: str) -> tuple[str, ...] | None:
        value = self._doc.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(name, "is not an array of strings")
        return tuple(value)
