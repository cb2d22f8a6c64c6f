"""Checking the authorization response the bank sends back through the browser."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

from connectors.errors import (
    AuthorizationExpired,
    BankMisconfigured,
    BankProtocolError,
    ConsentRejected,
    StateMismatch,
)
from connectors.oauth.boundary import error_code, oauth_error
from connectors.oauth.pending import PendingAuthorization
from connectors.oauth.rfc8414 import ServerMetadata
from connectors.oauth.rfc9207 import check_issuer

__all__ = ["parse_callback"]

#: RFC 6749 §4.1.2.1 codes saying the user (or the bank on the user's behalf) said no.
_REFUSALS = frozenset({"access_denied", "consent_required", "interaction_required"})


def parse_callback(
    pending: PendingAuthorization,
    query: Mapping[str, str],
    metadata: ServerMetadata,
    *,
    now: datetime | None = None,
) -> str:
    """Return the authorization code of a callback, or raise the typed reason it is bad.

    Pure (no I/O); `now` defaults to the current time. The order matters:

    1. `state` must equal the pending one (constant-time) — else :class:`StateMismatch`:
       the callback belongs to another session, or is forged (CSRF, RFC 6749 §10.12).
    2. The pending authorization must not have expired — :class:`AuthorizationExpired`.
    3. `iss` is checked (RFC 9207 §2.4) before anything else in the response is
       believed, error responses included — :class:`IssuerMismatch`.
    4. ``error=access_denied`` → :class:`ConsentRejected`; any other error →
       :class:`BankProtocolError`.
    5. A missing ``code`` → :class:`BankProtocolError`.

    Example (Starlette)::

        code = parse_callback(pending, request.query_params, await client.metadata())
    """
    state = query.get("state")
    if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
        raise StateMismatch(f"{pending.bank_id}: callback state does not match this session")
    if pending.is_expired(now or datetime.now(UTC)):
        raise AuthorizationExpired(f"{pending.bank_id}: the authorization request expired")
    check_issuer(
        query.get("iss"),
        metadata.issuer,
        iss_supported=metadata.authorization_response_iss_parameter_supported,
    )
    error = query.get("error")
    if error is not None:
        reason = error_code(error)
        if reason in _REFUSALS:
            raise ConsentRejected(f"{pending.bank_id}: authorization refused ({reason})")
        misconfigured = oauth_error(reason, pending.bank_id, "authorization")
        if isinstance(misconfigured, BankMisconfigured):
            raise misconfigured
        raise BankProtocolError(f"{pending.bank_id}: authorization failed ({reason})")
    authorization_code = query.get("code")
    if not authorization_code:
        raise BankProtocolError(f"{pending.bank_id}: callback carries neither code nor error")
    return authorization_code
