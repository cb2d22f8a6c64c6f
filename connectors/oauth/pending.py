"""The state of an authorization request between redirect and callback."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["PENDING_LIFETIME", "PendingAuthorization"]

#: docs/architecture.md, "Linking": a link session's `state` expires after 10 minutes.
PENDING_LIFETIME: Final = timedelta(minutes=10)


# RFC 6749 §10.10: state must not be guessable; 43 base64url chars carry 256 bits.
_STRONG_STATE = re.compile(r"[A-Za-z0-9._~-]{43,512}")


@dataclass(frozen=True, repr=False)
class PendingAuthorization:
    """Everything the callback needs, created by `BankOAuthClient.start_authorization`.

    The gateway stores it sealed (the verifier is a credential: with the code it buys
    the tokens), keyed by link session, and deletes it on first use: `state` is
    single-use, so a replayed callback finds nothing and fails as
    :class:`~connectors.errors.StateMismatch`. `repr` masks `state` and the verifier.
    :meth:`to_dict` / :meth:`from_dict` give a JSON-ready form for sealing.
    `dpop_key` is the connection's DPoP private key (PKCS#8 PEM, RFC 9449) for a bank
    that sender-constrains with DPoP: made here, bound to the code by ``dpop_jkt``, and
    kept with the grant afterwards; masked in `repr` like the verifier.
    """

    bank_id: str
    state: str
    code_verifier: str
    nonce: str | None
    redirect_uri: str
    created_at: datetime
    expires_at: datetime
    dpop_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("created_at", "expires_at"):
            if getattr(self, name).utcoffset() != timedelta(0):
                raise ValueError(f"{name} must be timezone-aware UTC")

    @classmethod
    def new(
        cls, bank_id: str, redirect_uri: str, *, with_nonce: bool, now: datetime,
        state: str | None = None,
    ) -> PendingAuthorization:
        """Fresh random values: 256-bit `state` and `nonce`, a 384-bit PKCE verifier.

        RFC 7636 §4.1 asks for 43 to 128 characters of unreserved characters; a
        64-character base64url string is inside both bounds. A caller may bring its own
        `state` (the gateway's carries the user's region, so the callback is routed
        without asking every region); it must be as unguessable as ours.
        """
        if state is not None and not _STRONG_STATE.fullmatch(state):
            raise ValueError("state must be 43-512 URL-safe characters of a random secret")
        now = now.astimezone(UTC)
        return cls(
            bank_id=bank_id,
            state=state or secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(48),
            nonce=secrets.token_urlsafe(32) if with_nonce else None,
            redirect_uri=redirect_uri,
            created_at=now,
            expires_at=now + PENDING_LIFETIME,
        )

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def to_dict(self) -> dict[str, str | None]:
        return {
            "bank_id": self.bank_id,
            "state": self.state,
            "code_verifier": self.code_verifier,
            "nonce": self.nonce,
            "redirect_uri": self.redirect_uri,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "dpop_key": self.dpop_key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str | None]) -> PendingAuthorization:
        def text(name: str) -> str:
            value = data.get(name)
            if not isinstance(value, str):
                raise ValueError(f"pending authorization: {name} is missing")
            return value

        nonce, dpop_key = data.get("nonce"), data.get("dpop_key")
        return cls(
            bank_id=text("bank_id"),
            state=text("state"),
            code_verifier=text("code_verifier"),
            nonce=nonce if isinstance(nonce, str) else None,
            redirect_uri=text("redirect_uri"),
            created_at=datetime.fromisoformat(text("created_at")),
            expires_at=datetime.fromisoformat(text("expires_at")),
            dpop_key=dpop_key if isinstance(dpop_key, str) else None,
        )

    def __repr__(self) -> str:
        return (
            f"PendingAuthorization(bank_id={self.bank_id!r}, state='***', "
            f"code_verifier='***', nonce={'None' if self.nonce is None else repr('***')}, "
            f"redirect_uri={self.redirect_uri!r}, created_at={self.created_at!r}, "
            f"expires_at={self.expires_at!r}, "
            f"dpop_key={'None' if self.dpop_key is None else repr('***')})"
        )
