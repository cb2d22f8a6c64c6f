"""What a bank's token endpoint hands back, validated once and kept out of logs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.errors import BankProtocolError

__all__ = ["TokenSet"]


def _masked(value: str | None) -> str:
    return "None" if value is None else "'***'"


@dataclass(frozen=True, repr=False)
class TokenSet:
    """The tokens of one grant (RFC 6749 §5.1).

    `expires_at` is timezone-aware UTC, or None when the bank gave no ``expires_in``.
    `scope` is what the bank granted, or the requested scope when it did not say
    (§5.1: omitted means "as requested"); after a refresh, None means "unchanged".
    `token_type` is ``"Bearer"``, or ``"DPoP"`` where the client sent a DPoP proof (RFC
    9449 §5): any other type, or a Bearer token where DPoP was asked for, is refused.
    `repr` masks tokens.
    `consent_expires_at` is the end of the user's consent when the bank names it in a
    token response field (the profile's ``[consent] expiry_field``), else None.
    """

    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scope: str | None
    token_type: str
    id_token: str | None = None
    consent_expires_at: datetime | None = None

    def __post_init__(self) -> None:
        for at in (self.expires_at, self.consent_expires_at):
            if at is not None and at.utcoffset() != timedelta(0):
                raise ValueError("expiry times must be timezone-aware UTC")

    def __repr__(self) -> str:
        return (
            f"TokenSet(access_token={_masked(self.access_token)}, "
            f"refresh_token={_masked(self.refresh_token)}, expires_at={self.expires_at!r}, "
            f"scope={self.scope!r}, token_type={self.token_type!r}, "
            f"id_token={_masked(self.id_token)})"
        )

    @classmethod
    def from_response(
        cls,
        data: Mapping[str, Any],
        *,
        now: datetime,
        requested_scope: str | None = None,
        previous_refresh_token: str | None = None,
        consent_expiry_field: str | None = None,
        token_type: str = "Bearer",  # noqa: S107 - a token type name, not a secret
    ) -> TokenSet:
        """Validate a successful token response; raise :class:`BankProtocolError` if bad.

        When the answer has no ``refresh_token`` (a refresh at a bank that does not
        rotate, RFC 6749 §6), `previous_refresh_token` stays in force.
        """
        access_token = data.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise BankProtocolError("token response has no access_token")
        answered = data.get("token_type")
        if not isinstance(answered, str) or answered.lower() != token_type.lower():
            # RFC 6749 §7.1: a client must not use a token whose type it does not know;
            # RFC 9449 §5: a Bearer answer to a DPoP request is an unbound token, which
            # a sender-constrained profile must not accept.
            raise BankProtocolError(
                f"token response has token_type {_safe(answered)}, not {token_type}"
            )
        refresh_token = _optional_str(data, "refresh_token") or previous_refresh_token
        scope = _optional_str(data, "scope")
        return cls(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_at=_expiry(data.get("expires_in"), now),
            scope=scope if scope is not None else requested_scope,
            token_type=token_type,
            id_token=_optional_str(data, "id_token"),
            consent_expires_at=(
                _consent_expiry(data.get(consent_expiry_field), consent_expiry_field, now)
                if consent_expiry_field else None
            ),
        )


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BankProtocolError(f"token response field {name} is not a string")
    return value or None


def _expiry(expires_in: object, now: datetime) -> datetime | None:
    if expires_in is None:
        return None
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
        raise BankProtocolError(
            "token response expires_in is not a number (a profile hook may absorb it)"
        )
    if not math.isfinite(expires_in) or expires_in < 0 or expires_in > 10 * 365 * 86400:
        raise BankProtocolError("token response expires_in is out of range")
    return now.astimezone(UTC) + timedelta(seconds=int(expires_in))


def _consent_expiry(value: object, name: str, now: datetime) -> datetime | None:
    """An RFC 3339 instant, or seconds from ``now`` as ``expires_in`` is; None if absent."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise BankProtocolError(f"token response {name} is not an RFC 3339 time") from None
        if at.utcoffset() is None:
            raise BankProtocolError(f"token response {name} has no UTC offset")
        return at.astimezone(UTC)
    try:
        return _expiry(value, now)
    except BankProtocolError:
        raise BankProtocolError(f"token response {name} is not a time or a duration") from None


def _safe(value: object) -> str:
    return repr(value)[:40] if isinstance(value, str) else type(value).__name__
