"""The Plaid connector on plaid-python: Link tokens, Items, accounts, transaction sync.

plaid-python is synchronous (urllib3); each call runs in a worker thread so the event
loop never blocks on Plaid. Every call passes through :func:`map_plaid_errors`, so
callers see only :class:`~connectors.errors.ConnectorError` subclasses. Access tokens
and public tokens travel as :class:`vault.Secret` and appear in no message.

Example::

    plaid = PlaidConnector(PlaidConfig("us", client_id, Secret(secret), PlaidEnvironment.SANDBOX))
    link = await plaid.create_link_token(user_id, webhook_url=f"{base}/webhooks/plaid/us")
    item = await plaid.exchange_public_token(Secret(public_token_from_frontend))
    batch = await plaid.sync_transactions(item.access_token, cursor=None)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import plaid
from plaid.api import plaid_api
from plaid.model.accounts_get_request import AccountsGetRequest
from plaid.model.country_code import CountryCode
from plaid.model.item_public_token_exchange_request import ItemPublicTokenExchangeRequest
from plaid.model.item_remove_request import ItemRemoveRequest
from plaid.model.link_token_create_request import LinkTokenCreateRequest
from plaid.model.link_token_create_request_user import LinkTokenCreateRequestUser
from plaid.model.products import Products
from plaid.model.transactions_sync_request import TransactionsSyncRequest
from plaid.model.webhook_verification_key_get_request import WebhookVerificationKeyGetRequest

from connectors.errors import BankProtocolError, BankUnavailable
from connectors.models import Account, Balance, Transaction
from connectors.plaid.boundary import MutationDuringPagination, map_plaid_errors, plaid_failure
from connectors.plaid.config import PlaidConfig
from connectors.plaid.mapping import to_account, to_balance, to_transaction
from vault import Secret

__all__ = ["LinkToken", "PlaidConnector", "PlaidItem", "RemovedTransaction", "SyncBatch"]

T = TypeVar("T")
#: Pages of one /transactions/sync run (Plaid pages hold up to 500 entries).
DEFAULT_MAX_SYNC_PAGES = 200
#: Restarts of a pagination after TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION.
DEFAULT_MAX_SYNC_RESTARTS = 3


@dataclass(frozen=True, slots=True)
class LinkToken:
    """What the frontend needs to open Plaid Link; the token expires at ``expiration``."""

    link_token: str
    expiration: datetime


@dataclass(frozen=True, slots=True)
class PlaidItem:
    """An exchanged Item: ``item_id`` names it in webhooks, ``access_token`` must be sealed."""

    item_id: str
    access_token: Secret


@dataclass(frozen=True, slots=True)
class RemovedTransaction:
    """A transaction Plaid withdrew (typically a pending entry that posted or vanished)."""

    bank_transaction_id: str
    bank_account_id: str | None


@dataclass(frozen=True, slots=True)
class SyncBatch:
    """Everything since the starting cursor; store it and ``next_cursor`` in one commit."""

    added: tuple[Transaction, ...]
    modified: tuple[Transaction, ...]
    removed: tuple[RemovedTransaction, ...]
    next_cursor: str
    pages: int
    restarts: int


class PlaidConnector:
    """One region's Plaid client; share one instance per region and process."""

    def __init__(self, config: PlaidConfig) -> None:
        self.config = config
        configuration = plaid.Configuration(
            host=config.api_host,
            api_key={"clientId": config.client_id, "secret": config.secret.reveal()},
        )
        self._client = plaid.ApiClient(configuration)
        self._api = plaid_api.PlaidApi(self._client)

    def close(self) -> None:
        """Release plaid-python's connection pool (process shutdown, tests)."""
        self._client.close()

    async def _call(self, operation: str, fn: Callable[..., Any], request: Any) -> Any:
        def run() -> Any:
            with map_plaid_errors(self.config.region, operation):
                return fn(request, _request_timeout=self.config.timeout).to_dict()

        return await asyncio.to_thread(run)

    async def create_link_token(
        self, client_user_id: str, *, webhook_url: str,
        access_token: Secret | None = None, redirect_uri: str | None = None,
    ) -> LinkToken:
        """``/link/token/create``; with ``access_token`` it opens Link in update mode.

        ``client_user_id`` is our user id, never PII. Update mode leaves ``products``
        out: the Item already has them, and Plaid refuses a different set there.
        """
        fields: dict[str, Any] = {
            "client_name": self.config.client_name,
            "language": self.config.language,
            "country_codes": [CountryCode(c) for c in self.config.country_codes],
            "user": LinkTokenCreateRequestUser(client_user_id=client_user_id),
            "webhook": webhook_url,
        }
        if access_token is not None:
            fields["access_token"] = access_token.reveal()
        else:
            fields["products"] = [Products(p) for p in self.config.products]
        if redirect_uri is not None:
            fields["redirect_uri"] = redirect_uri
        out = await self._call("link token create", self._api.link_token_create,
                               LinkTokenCreateRequest(**fields))
        expiration = out["expiration"]
        if not isinstance(expiration, datetime):
            raise BankProtocolError("plaid: link token expiration is not a timestamp")
        return LinkToken(str(out["link_token"]), expiration.astimezone(UTC))

    async def exchange_public_token(self, public_token: Secret) -> PlaidItem:
        """``/item/public_token/exchange``: the Item id and its (long-lived) access token."""
        out = await self._call(
            "public token exchange", self._api.item_public_token_exchange,
            ItemPublicTokenExchangeRequest(public_token=public_token.reveal()),
        )
        return PlaidItem(str(out["item_id"]), Secret(str(out["access_token"])))

    async def get_accounts(
        self, access_token: Secret
    ) -> tuple[list[Account], list[Balance]]:
        """``/accounts/get``: accounts and their cached balances (no balance refresh)."""
        request = AccountsGetRequest(access_token=access_token.reveal())
        out = await self._call("accounts get", self._api.accounts_get, request)
        as_of = datetime.now(UTC)
        accounts = [to_account(a) for a in out["accounts"]]
        balances = [b for a in out["accounts"] if (b := to_balance(a, as_of)) is not None]
        return accounts, balances

    async def sync_transactions(
        self, access_token: Secret, cursor: str | None, *,
        max_pages: int = DEFAULT_MAX_SYNC_PAGES, max_restarts: int = DEFAULT_MAX_SYNC_RESTARTS,
    ) -> SyncBatch:
        """``/transactions/sync`` from ``cursor`` (``None``: from the start) until done.

        Loops while ``has_more``. On ``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION``
        everything fetched in this run is dropped and the pagination restarts from
        ``cursor`` — the last one the caller committed — as Plaid documents; after
        ``max_restarts`` the error escapes as a retryable :class:`BankUnavailable`.
        """
        for restart in range(max_restarts + 1):
            try:
                return await self._paginate(access_token, cursor, max_pages, restart)
            except MutationDuringPagination:
                if restart == max_restarts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _paginate(
        self, access_token: Secret, start: str | None, max_pages: int, restarts: int
    ) -> SyncBatch:
        added: list[Transaction] = []
        modified: list[Transaction] = []
        removed: list[RemovedTransaction] = []
        cursor = start
        for page in range(1, max_pages + 1):
            fields: dict[str, Any] = {"access_token": access_token.reveal(), "count": 500}
            if cursor:
                fields["cursor"] = cursor
            out = await self._call("transactions sync", self._api.transactions_sync,
                                   TransactionsSyncRequest(**fields))
            added.extend(to_transaction(t) for t in out["added"])
            modified.extend(to_transaction(t) for t in out["modified"])
            removed.extend(_removed(r) for r in out["removed"])
            cursor = str(out["next_cursor"])
            if not out["has_more"]:
                return SyncBatch(tuple(added), tuple(modified), tuple(removed), cursor,
                                 page, restarts)
        raise BankUnavailable(
            f"plaid {self.config.region}: transactions sync: more than {max_pages} pages"
        )

    async def remove_item(self, access_token: Secret) -> None:
        """``/item/remove``: Plaid invalidates the access token and stops billing."""
        await self._call("item remove", self._api.item_remove,
                         ItemRemoveRequest(access_token=access_token.reveal()))

    async def webhook_key(self, kid: str) -> Mapping[str, Any] | None:
        """``/webhook_verification_key/get``: the JWK for ``kid``, ``None`` if Plaid has none."""
        request = WebhookVerificationKeyGetRequest(key_id=kid)

        def run() -> Any:
            try:
                return self._api.webhook_verification_key_get(
                    request, _request_timeout=self.config.timeout
                ).to_dict()
            except plaid.ApiException as exc:
                if plaid_failure(exc).status == 400:
                    return None  # INVALID_INPUT and kin: the kid names no key of ours
                raise

        with map_plaid_errors(self.config.region, "webhook key get"):
            out = await asyncio.to_thread(run)
        if out is None:
            return None
        key = out.get("key")
        if not isinstance(key, Mapping):
            raise BankProtocolError("plaid: webhook key answer has no key")
        return key


def _removed(entry: Mapping[str, Any]) -> RemovedTransaction:
    txn_id = entry.get("transaction_id")
    if not isinstance(txn_id, str) or not txn_id:
        raise BankProtocolError("plaid: a removed transaction has no id")
    account = entry.get("account_id")
    return RemovedTransaction(txn_id, account if isinstance(account, str) else None)
