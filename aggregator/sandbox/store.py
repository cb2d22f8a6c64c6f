"""In-memory state of the authorization server: codes, grants, tokens, replay caches.

One re-entrant lock guards it all: the server runs in an event loop, but tests and
benchmarks poke the bank (``advance_day``, ``faults``) from other threads.

Strict-bank semantics live here: a code or refresh token presented a second time
revokes the whole grant it belongs to (RFC 6749 §4.1.2 and §10.4, RFC 9700 §4.14.2).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from aggregator.sandbox.models import AuthorizationCode, Grant, TokenRecord, digest


class SandboxClock:
    """Wall-clock time plus an offset tests can move forward instead of sleeping."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds


@dataclass
class IssuedTokens:
    """What :meth:`TokenStore.save_tokens` needs to know about one token response."""

    client_id: str
    user: str
    scope: str
    access_token: str
    refresh_token: str | None
    expires_in: int


class TokenStore:
    """Codes, grants and tokens, each looked up by the digest of its value."""

    def __init__(self, clock: SandboxClock, refresh_token_ttl: int) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.refresh_token_ttl = refresh_token_ttl
        self._codes: dict[str, AuthorizationCode] = {}
        self._grants: dict[str, Grant] = {}
        self._tokens: dict[str, TokenRecord] = {}
        self._by_access: dict[str, str] = {}
        self._by_refresh: dict[str, str] = {}
        self._seen_jti: dict[tuple[str, str], float] = {}

    # -- authorization codes -------------------------------------------------------

    def save_code(self, code: AuthorizationCode) -> None:
        with self.lock:
            self._prune_codes()
            self._codes[code.code_hash] = code

    def take_code(self, code: str, client_id: str) -> AuthorizationCode | None:
        """The unused, unexpired code issued to ``client_id``; a replay kills its grant."""
        with self.lock:
            record = self._codes.get(digest(code))
            if record is None or record.client_id != client_id:
                return None
            if record.used:
                if record.grant_id:
                    self.revoke_grant(record.grant_id)
                return None
            if record.expires_at <= self.clock.now():
                return None
            return record

    def code_dpop_jkt(self, code: str) -> str | None:
        """The DPoP key thumbprint a code is bound to (RFC 9449 §10), without using it."""
        with self.lock:
            record = self._codes.get(digest(code))
            return record.dpop_jkt if record is not None else None

    def nonce_seen(self, client_id: str, nonce: str) -> bool:
        with self.lock:
            return any(c.client_id == client_id and c.nonce == nonce for c in self._codes.values())

    def _prune_codes(self) -> None:
        # Used codes stay while they could still be replayed against a live grant.
        horizon = self.clock.now() - self.refresh_token_ttl
        for key in [k for k, c in self._codes.items() if c.expires_at < horizon]:
            del self._codes[key]

    # -- grants and tokens ---------------------------------------------------------

    def save_tokens(
        self,
        issued: IssuedTokens,
        code: AuthorizationCode | None = None,
        rotated_from: TokenRecord | None = None,
    ) -> TokenRecord:
        """Record a token response: a new grant for a code, the old grant for a refresh."""
        with self.lock:
            if rotated_from is not None:
                grant = self._grants[rotated_from.grant_id]
            else:
                grant = Grant(secrets.token_hex(8), issued.client_id, issued.user, issued.scope)
                self._grants[grant.grant_id] = grant
            if code is not None:
                code.used = True
                code.grant_id = grant.grant_id
            now = self.clock.now()
            record = TokenRecord(
                token_id=secrets.token_hex(8),
                grant_id=grant.grant_id,
                client_id=issued.client_id,
                user=issued.user,
                scope=issued.scope,
                access_hash=digest(issued.access_token),
                refresh_hash=digest(issued.refresh_token) if issued.refresh_token else None,
                issued_at=now,
                expires_in=issued.expires_in,
                refresh_expires_at=now + self.refresh_token_ttl if issued.refresh_token else None,
            )
            self._tokens[record.token_id] = record
            self._by_access[record.access_hash] = record.token_id
            if record.refresh_hash:
                self._by_refresh[record.refresh_hash] = record.token_id
            grant.token_ids.append(record.token_id)
            return record

    def find_access(self, access_token: str) -> TokenRecord | None:
        """The record of a live access token: not expired, not revoked, grant alive."""
        with self.lock:
            record = self._lookup(self._by_access, access_token)
            if record is None or record.access_revoked or self._grants[record.grant_id].revoked:
                return None
            if record.issued_at + record.expires_in <= self.clock.now():
                return None
            return record

    def find_refresh(self, refresh_token: str, client_id: str) -> TokenRecord | None:
        """The live record of a refresh token; presenting a rotated one revokes the grant."""
        with self.lock:
            record = self._lookup(self._by_refresh, refresh_token)
            if record is None or record.client_id != client_id:
                return None
            if record.refresh_state == "used":
                self.revoke_grant(record.grant_id)
                return None
            if record.refresh_state != "active" or self._grants[record.grant_id].revoked:
                return None
            if (
                record.refresh_expires_at is not None
                and record.refresh_expires_at <= self.clock.now()
            ):
                return None
            return record

    def find_any(self, token: str, hint: str | None) -> tuple[TokenRecord, str] | None:
        """For revocation (RFC 7009 §2.1): try the hinted type first, then the other."""
        order = ["refresh_token", "access_token"]
        if hint == "access_token":
            order.reverse()
        with self.lock:
            for kind in order:
                index = self._by_access if kind == "access_token" else self._by_refresh
                record = self._lookup(index, token)
                if record is not None:
                    return record, kind
            return None

    def retire_refresh(self, record: TokenRecord) -> None:
        with self.lock:
            if record.refresh_state == "active":
                record.refresh_state = "used"

    def revoke_access(self, record: TokenRecord) -> None:
        with self.lock:
            record.access_revoked = True

    def revoke_grant(self, grant_id: str) -> None:
        """Kill every access and refresh token ever issued under the grant."""
        with self.lock:
            grant = self._grants[grant_id]
            grant.revoked = True
            for token_id in grant.token_ids:
                record = self._tokens[token_id]
                record.access_revoked = True
                record.refresh_state = "revoked"

    def grant_revoked(self, grant_id: str) -> bool:
        with self.lock:
            return self._grants[grant_id].revoked

    def _lookup(self, index: dict[str, str], value: str) -> TokenRecord | None:
        token_id = index.get(digest(value))
        return self._tokens[token_id] if token_id else None

    # -- client assertion replay cache (RFC 7523 §3 item 7) -----------------------

    def claim_jti(self, client_id: str, jti: str, expires_at: float) -> bool:
        """True the first time a client presents ``jti``, False on every replay."""
        with self.lock:
            # Real time, not the test clock: joserfc checks `exp` against real time.
            now = time.time()
            for key in [k for k, exp in self._seen_jti.items() if exp < now]:
                del self._seen_jti[key]
            if (client_id, jti) in self._seen_jti:
                return False
            self._seen_jti[(client_id, jti)] = expires_at
            return True
