"""Account-access consents of the sandbox's OBIE mode, as the v3.1 specification draws them.

OBIE Read/Write API v3.1, Account and Transaction API, "Account Access Consents":

- ``POST /account-access-consents`` with the client's *client-credentials* token (scope
  ``accounts``): ``Data.Permissions`` (a non-empty set of known codes; a transaction
  permission needs ``ReadTransactionsBasic`` or ``…Detail`` together with ``…Credits``
  or ``…Debits``, as the spec's permission rules say), optional ``ExpirationDateTime``
  and ``TransactionFromDateTime``; answered ``201`` with ``Status``
  ``AwaitingAuthorisation``;
- ``GET /account-access-consents/{ConsentId}``: the consent, to its own client only;
- ``DELETE /account-access-consents/{ConsentId}``: ``204``; the consent is ``Revoked``.

The user authorises (``Authorised``, with the accounts they picked) or rejects it on the
bank's consent page; tokens from that authorization are bound to it, so the account
API serves exactly what it allows, and refreshing ends when it ends.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.sandbox.aisp import obie_error
from aggregator.sandbox.middleware import current_issuer
from aggregator.sandbox.models import digest
from aggregator.sandbox.store import SandboxClock

PERMISSIONS = frozenset({
    "ReadAccountsBasic", "ReadAccountsDetail", "ReadBalances", "ReadBeneficiariesBasic",
    "ReadBeneficiariesDetail", "ReadDirectDebits", "ReadOffers", "ReadPAN", "ReadParty",
    "ReadPartyPSU", "ReadProducts", "ReadScheduledPaymentsBasic",
    "ReadScheduledPaymentsDetail", "ReadStandingOrdersBasic", "ReadStandingOrdersDetail",
    "ReadStatementsBasic", "ReadStatementsDetail", "ReadTransactionsBasic",
    "ReadTransactionsCredits", "ReadTransactionsDebits", "ReadTransactionsDetail",
})
_TXN_KIND = {"ReadTransactionsBasic", "ReadTransactionsDetail"}
_TXN_DIRECTION = {"ReadTransactionsCredits", "ReadTransactionsDebits"}
CONSENTS_PATH = "/account-access-consents"
#: The ``acr`` values the bank asserts (OBIE Security Profile: SCA, or CA alone).
ACR_VALUES = ("urn:openbanking:psd2:sca", "urn:openbanking:psd2:ca")


def intent_of(params: Mapping[str, str]) -> str | None:
    """``claims.id_token.openbanking_intent_id.value`` of an authorization request."""
    try:
        claims = json.loads(params.get("claims") or "{}")
        value = claims["id_token"]["openbanking_intent_id"]["value"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


@dataclass
class AccessConsent:
    """One account-access consent and what the user decided about it."""

    consent_id: str
    client_id: str
    permissions: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    transactions_from: datetime | None
    status: str = "AwaitingAuthorisation"
    status_at: datetime | None = None
    user: str | None = None
    account_ids: tuple[str, ...] = ()

    def usable(self, now: datetime) -> bool:
        return self.status == "Authorised" and (self.expires_at is None or self.expires_at > now)

    def allows(self, *permissions: str) -> bool:
        return any(p in self.permissions for p in permissions)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ConsentId": self.consent_id,
            "CreationDateTime": _when(self.created_at),
            "Status": self.status,
            "StatusUpdateDateTime": _when(self.status_at or self.created_at),
            "Permissions": list(self.permissions),
        }
        if self.expires_at is not None:
            data["ExpirationDateTime"] = _when(self.expires_at)
        if self.transactions_from is not None:
            data["TransactionFromDateTime"] = _when(self.transactions_from)
        url = f"{current_issuer()}/open-banking/v3.1/aisp{CONSENTS_PATH}/{self.consent_id}"
        return {"Data": data, "Risk": {}, "Links": {"Self": url}, "Meta": {"TotalPages": 1}}


@dataclass(frozen=True)
class ClientToken:
    client_id: str
    scope: str
    expires_at: float


class ConsentStore:
    """Consents, the client-credentials tokens that manage them, and the bindings of
    authorization codes and grants to the consent they were issued under."""

    def __init__(self, clock: SandboxClock) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self._consents: dict[str, AccessConsent] = {}
        self._client_tokens: dict[str, ClientToken] = {}
        self._by_code: dict[str, str] = {}
        self._by_grant: dict[str, str] = {}
        #: Keys that verify a client's request objects instead of its registered ones.
        self.request_object_keys: dict[str, Any] = {}

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)

    def save_client_token(self, token: str, client_id: str, scope: str, ttl: int) -> None:
        with self.lock:
            self._client_tokens[digest(token)] = ClientToken(
                client_id, scope, self.clock.now() + ttl)

    def client_of(self, token: str) -> ClientToken | None:
        with self.lock:
            found = self._client_tokens.get(digest(token))
        return found if found is not None and found.expires_at > self.clock.now() else None

    def add(self, consent: AccessConsent) -> None:
        with self.lock:
            self._consents[consent.consent_id] = consent

    def get(self, consent_id: str) -> AccessConsent | None:
        with self.lock:
            return self._consents.get(consent_id)

    def decide(self, consent_id: str, user: str | None, account_ids: tuple[str, ...]) -> None:
        """The user's answer on the consent page: authorised for those accounts, or not."""
        with self.lock:
            consent = self._consents[consent_id]
            if consent.status != "AwaitingAuthorisation":
                return
            consent.status = "Authorised" if user else "Rejected"
            consent.status_at = self.now()
            consent.user, consent.account_ids = user, account_ids

    def revoke(self, consent_id: str) -> bool:
        """``Revoked`` from now on (by the client's DELETE or the user at the bank)."""
        with self.lock:
            consent = self._consents.get(consent_id)
            if consent is None:
                return False
            consent.status, consent.status_at = "Revoked", self.now()
            return True

    def bind_code(self, code: str, consent_id: str) -> None:
        with self.lock:
            self._by_code[digest(code)] = consent_id

    def bind_grant(self, code_hash: str, grant_id: str) -> None:
        with self.lock:
            consent_id = self._by_code.pop(code_hash, None)
            if consent_id is not None:
                self._by_grant[grant_id] = consent_id

    def for_grant(self, grant_id: str) -> AccessConsent | None:
        with self.lock:
            consent_id = self._by_grant.get(grant_id)
            return self._consents.get(consent_id) if consent_id else None


class ConsentViews:
    """``/account-access-consents`` and ``/account-access-consents/{ConsentId}``."""

    def __init__(self, consents: ConsentStore) -> None:
        self.consents = consents

    def routes(self) -> list[Route]:
        return [
            Route(CONSENTS_PATH, self.create, methods=["POST"]),
            Route(CONSENTS_PATH + "/{consent_id}", self.read, methods=["GET"]),
            Route(CONSENTS_PATH + "/{consent_id}", self.delete, methods=["DELETE"]),
        ]

    async def create(self, request: Request) -> Response:
        client = self._client(request)
        if isinstance(client, Response):
            return client
        try:
            body = await request.json()
            data = body["Data"]
            permissions = data["Permissions"]
        except (ValueError, KeyError, TypeError):
            return obie_error(400, "UK.OBIE.Field.Missing", "Data.Permissions is required.")
        problem = _permissions_problem(permissions)
        if problem:
            return obie_error(400, "UK.OBIE.Field.Invalid", problem)
        try:
            expires = _instant(data.get("ExpirationDateTime"))
            since = _instant(data.get("TransactionFromDateTime"))
        except ValueError:
            return obie_error(400, "UK.OBIE.Field.InvalidDate", "A date-time is malformed.")
        now = self.consents.now()
        if expires is not None and expires <= now:
            return obie_error(400, "UK.OBIE.Field.InvalidDate", "ExpirationDateTime is past.")
        consent = AccessConsent(
            consent_id="aac-" + str(uuid.UUID(bytes=secrets.token_bytes(16))),
            client_id=client, permissions=tuple(permissions), created_at=now,
            expires_at=expires, transactions_from=since,
        )
        self.consents.add(consent)
        return JSONResponse(consent.to_json(), status_code=201)

    async def read(self, request: Request) -> Response:
        found = self._owned(request)
        if isinstance(found, Response):
            return found
        with self.consents.lock:
            return JSONResponse(found.to_json())

    async def delete(self, request: Request) -> Response:
        found = self._owned(request)
        if isinstance(found, Response):
            return found
        self.consents.revoke(found.consent_id)
        return Response(status_code=204)

    def _owned(self, request: Request) -> AccessConsent | Response:
        client = self._client(request)
        if isinstance(client, Response):
            return client
        found = self.consents.get(request.path_params["consent_id"])
        if found is None or found.client_id != client:
            # Another client's consent does not exist, as far as this one can tell.
            return obie_error(400, "UK.OBIE.Resource.NotFound", "No such consent.")
        return found

    def _client(self, request: Request) -> str | Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = self.consents.client_of(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            return obie_error(401, "UK.OBIE.Unauthorized", "A client-credentials token is "
                              "required.", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if "accounts" not in token.scope.split():
            return obie_error(403, "UK.OBIE.Forbidden", "The token lacks the accounts scope.")
        return token.client_id


def _permissions_problem(permissions: object) -> str | None:
    if not isinstance(permissions, list) or not permissions or not all(
            isinstance(p, str) for p in permissions):
        return "Data.Permissions must be a non-empty array of permission codes."
    if set(permissions) - PERMISSIONS:
        return "Data.Permissions has an unknown permission code."
    asked = set(permissions)
    if bool(asked & _TXN_KIND) != bool(asked & _TXN_DIRECTION):
        return ("ReadTransactionsBasic/Detail go together with ReadTransactionsCredits "
                "and/or Debits.")
    return None


def _instant(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("not a string")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("no offset")
    return moment


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
