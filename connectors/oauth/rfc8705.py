"""Mutual-TLS client authentication and endpoint aliases (RFC 8705), client side.

UK Open Banking and FAPI 2.0 banks authenticate the client by its transport certificate
and bind tokens to it, so every call to such a bank (PAR, token, revocation, account API)
presents the certificate the profile names. This module provides:

- :func:`bank_ssl_context`: the TLS context of one bank, with the client certificate and
  key (``tls_client_cert_file``, ``tls_client_key_file``) and, where the bank's server
  certificate chains to a private root (the Open Banking directory's), ``tls_ca_file``.
  A key readable by group or others, an unreadable file or a key that does not match
  its certificate is a :class:`~connectors.errors.ProfileError` at start-up, naming the
  file. Python's ``ssl`` loads keys from files only: a key held in a vault or HSM would
  need an OpenSSL provider, which the standard library cannot load.
- :func:`apply_mtls_aliases`: §5, a client using mutual TLS sends its requests to the
  ``mtls_endpoint_aliases`` the bank publishes instead of the ordinary endpoints.
- :func:`tls_client_auth`: §2.1 (``tls_client_auth``, PKI) and §2.2
  (``self_signed_tls_client_auth``): the request carries ``client_id`` and no secret;
  the certificate is the credential.
"""

from __future__ import annotations

import dataclasses
import ssl
import stat
from pathlib import Path
from typing import Any

import certifi
import httpx

from connectors._schema import url_problem
from connectors.errors import BankProtocolError, ProfileError
from connectors.oauth.rfc8414 import ServerMetadata
from connectors.profiles import BankProfile

__all__ = ["apply_mtls_aliases", "bank_ssl_context", "tls_client_auth"]

#: The endpoints this client calls that §5 lets a bank alias (authorization is front-channel).
_ALIASED = ("token_endpoint", "pushed_authorization_request_endpoint", "revocation_endpoint")


def bank_ssl_context(profile: BankProfile) -> ssl.SSLContext | None:
    """The bank's own TLS context, or None when the shared default serves it."""
    cert, key, ca = profile.tls_client_cert_file, profile.tls_client_key_file, profile.tls_ca_file
    if cert is None and ca is None:
        return None
    source = str(profile.source)
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise ProfileError(source, "tls_ca_file", f"cannot load {ca}: {_reason(exc)}") from None
    if cert is not None:
        assert key is not None  # the loader requires both or neither
        _check_readable(source, "tls_client_cert_file", cert)
        _check_private(source, "tls_client_key_file", key)
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise ProfileError(
                source, "tls_client_key_file",
                f"cannot use {cert} with {key}: {_reason(exc)}",
            ) from None
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or "not a PEM certificate/key")
    return str(exc.strerror or exc)


def _check_readable(source: str, key: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ProfileError(source, key, f"cannot read {path}: {exc.strerror}") from None


def _check_private(source: str, key: str, path: Path) -> None:
    """A private key must be readable by its owner only (mode 0600 or 0400)."""
    _check_readable(source, key, path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ProfileError(
            source, key, f"{path} is accessible to group or others (mode {mode:04o}); "
            "chmod 600 it"
        )


def apply_mtls_aliases(metadata: ServerMetadata) -> ServerMetadata:
    """`metadata` with the endpoints replaced by their mutual-TLS aliases (§5), if any.

    Each alias is a URL held to the same rules as the endpoint it replaces; an alias
    object that is not a JSON object, or a bad alias URL, is a protocol error.
    """
    aliases = metadata.raw.get("mtls_endpoint_aliases")
    if aliases is None:
        return metadata
    if not isinstance(aliases, dict):
        raise BankProtocolError(f"discovery: {metadata.source}: mtls_endpoint_aliases "
                                "is not a JSON object")
    replaced: dict[str, Any] = {}
    for name in _ALIASED:
        value = aliases.get(name)
        if value is None:
            continue
        problem = url_problem(value) if isinstance(value, str) else "is not a string"
        if problem:
            raise BankProtocolError(
                f"discovery: {metadata.source}: mtls_endpoint_aliases.{name} {problem}"
            )
        replaced[name] = value
    return dataclasses.replace(metadata, **replaced)


def tls_client_auth(
    auth: Any, method: str, uri: str, headers: Any, body: str | bytes | None
) -> tuple[str, Any, str]:
    """authlib client-auth callable: ``client_id`` in the form body, nothing else (§2)."""
    text = body.decode() if isinstance(body, bytes) else (body or "")
    params = httpx.QueryParams(text)
    if "client_id" not in params:  # a pushed request (RFC 9126 §2.1) already has it
        params = params.add("client_id", auth.client_id)
    return uri, headers, str(params)
