"""The API's request and response bodies (see :mod:`aggregator.http.schema`).

Responses show what an application needs and no more: account numbers and holder
names stay sealed in the store (only the last four characters travel, as ``mask``),
and bank-internal ids never leave. Money is a decimal string with its currency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from aggregator.http.schema import rules
from aggregator.models import (
    AccountType,
    ConnectionStatus,
    ResourceOutcome,
    SyncOutcome,
    TransactionStatus,
)

ID = r"^[a-z]{3}_[a-z]{2,8}_[a-z2-7]{26}$"

#: Example ids for the OpenAPI document (Swagger UI builds its sample bodies from them).
EXAMPLE_CON = "con_eu_7u67ztg3wonvlflnxte242dddm"
EXAMPLE_USR = "usr_eu_4kq3ajxmvzd2tq5w6n7ypc3e2a"
EXAMPLE_ACC = "acc_eu_775eazj22nnogakcfha6za4sem"
EXAMPLE_TXN = "txn_eu_q2dm3wz5lfz6x7uvrkcbjqyhye"


# -- requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateUser:
    """A user of the calling application, homed in ``region`` for good."""

    external_id: str = field(metadata=rules(
        min_length=1, max_length=255, example="customer-4711",
        description="The application's own id for the user; stored sealed, found by "
                    "keyed hash. Unique per application and region.",
    ))
    region: str = field(metadata=rules(
        pattern=r"^[a-z]{2,8}$", example="eu",
        description="The user's home region: all of the user's data stays there.",
    ))


@dataclass(frozen=True)
class PageQuery:
    """Query of a cursor-paginated list."""

    cursor: str | None = field(default=None, metadata=rules(
        max_length=512, description="`next_cursor` of the previous page; omit to start.",
    ))
    limit: int = field(default=100, metadata=rules(minimum=1, maximum=500))


@dataclass(frozen=True)
class SyncQuery:
    """Query of ``/transactions/sync``."""

    cursor: str | None = field(default=None, metadata=rules(
        max_length=512, description="`next_cursor` of the previous call; omit (or send "
                                    "empty) to receive the whole history as `added`.",
    ))
    count: int = field(default=100, metadata=rules(minimum=1, maximum=500))


# -- responses ------------------------------------------------------------------------


@dataclass(frozen=True)
class UserOut:
    """A user of the calling application."""

    id: str = field(metadata=rules(pattern=ID, example=EXAMPLE_USR))
    external_id: str
    region: str
    created_at: datetime


@dataclass(frozen=True)
class ErrorOut:
    """Why the last sync failed or was partial: a code of the gateway's own, and a message
    for people. Never the bank's answer."""

    code: str = field(metadata=rules(example="not_permitted"))
    message: str


@dataclass(frozen=True)
class ConnectionOut:
    """A user's grant at one bank."""

    id: str = field(metadata=rules(pattern=ID, example=EXAMPLE_CON))
    user_id: str = field(metadata=rules(pattern=ID, example=EXAMPLE_USR))
    bank_id: str
    status: ConnectionStatus
    status_reason: str | None
    consent_expires_at: datetime | None = field(metadata=rules(
        description="When the user's consent at the bank ends (the bank's answer, else the "
                    "bank's regulated period: 90 days in the UK, 180 in the EEA), renewed "
                    "by an update-mode link session; `null` when no end is known. "
                    "`connection.consent_expiring` is sent some days before; after it the "
                    "connection is `reauth_required` with `status_reason` "
                    "`consent_expired`.",
    ))
    created_at: datetime
    updated_at: datetime
    next_sync_allowed_at: datetime | None = field(metadata=rules(
        description="When `POST /v1/connections/{id}/sync` is next within the bank's rate "
                    "budget (unattended calls per rolling 24 hours); the time of the "
                    "request when it is now, `null` for a connection that does not sync.",
    ))
    last_synced_at: datetime | None = field(default=None, metadata=rules(
        description="When a sync last committed data (`complete` or `partial`).",
    ))
    last_sync_outcome: SyncOutcome | None = field(default=None, metadata=rules(
        description="How the latest sync ended: `complete`, `partial` (some resource of "
                    "some account was refused or missing; the rest was committed, see "
                    "`GET /v1/connections/{id}/syncs`) or `failed` (nothing committed). "
                    "`null` before the first sync.",
    ))
    last_error: ErrorOut | None = field(default=None, metadata=rules(
        description="The latest sync's error, when it was `partial` or `failed`.",
    ))
    in_flight: str | None = field(default=None, metadata=rules(
        description="`refresh_unresolved` while a token refresh of this connection was "
                    "interrupted (a worker stopped mid-refresh) and is not yet resolved: "
                    "the grant may be dead although `status` still reads `active`.",
    ))


@dataclass(frozen=True)
class ConnectionList:
    data: list[ConnectionOut]


@dataclass(frozen=True)
class BalanceOut:
    current: Decimal
    available: Decimal | None
    credit_limit: Decimal | None
    currency: str = field(metadata=rules(pattern=r"^[A-Z]{3}$"))
    as_of: datetime


@dataclass(frozen=True)
class ResourceFreshness:
    """One resource of an account: the latest outcome and the last successful read."""

    resource: str = field(metadata=rules(example="transactions"))
    outcome: ResourceOutcome
    error: ErrorOut | None
    synced_at: datetime | None = field(metadata=rules(
        description="When the bank last answered this resource; `null` if it never did.",
    ))
    checked_at: datetime


@dataclass(frozen=True)
class AccountOut:
    """An account and its latest balance (``null`` before the first sync fetched one)."""

    id: str = field(metadata=rules(pattern=ID, example=EXAMPLE_ACC))
    connection_id: str = field(metadata=rules(pattern=ID, example=EXAMPLE_CON))
    name: str
    type: AccountType
    currency: str = field(metadata=rules(pattern=r"^[A-Z]{3}$"))
    mask: str | None
    balance: BalanceOut | None
    next_sync_allowed_at: datetime | None = field(metadata=rules(
        description="When this account's own rate budget (unattended reads of its balances "
                    "and of its transactions per rolling 24 hours) next allows a read; the "
                    "time of the request when it is now. A sync of the connection also "
                    "needs the connection's `next_sync_allowed_at`. Plaid counts calls per "
                    "item, so a Plaid connection's accounts show the connection's time. "
                    "`null` when the connection is not `active`.",
    ))
    freshness: list[ResourceFreshness] = field(default_factory=list, metadata=rules(
        description="Per resource (`balances`, `transactions`), how fresh it is and why "
                    "not, when the bank refused (`not_permitted`) or lacks it "
                    "(`not_offered`). Empty before the first sync.",
    ))


@dataclass(frozen=True)
class AccountList:
    data: list[AccountOut]


@dataclass(frozen=True)
class TransactionOut:
    """A statement entry; ``amount`` is negative for money leaving the account."""

    id: str = field(metadata=rules(pattern=ID, example=EXAMPLE_TXN))
    account_id: str = field(metadata=rules(pattern=ID, example=EXAMPLE_ACC))
    amount: Decimal
    currency: str = field(metadata=rules(pattern=r"^[A-Z]{3}$"))
    status: TransactionStatus
    booked_on: date | None
    value_on: date | None
    description: str
    counterparty: str | None
    merchant_category: str | None


@dataclass(frozen=True)
class TransactionPage:
    """Newest first; ``next_cursor`` is ``null`` on the last page."""

    data: list[TransactionOut]
    next_cursor: str | None


@dataclass(frozen=True)
class RemovedTransaction:
    transaction_id: str = field(metadata=rules(pattern=ID, example=EXAMPLE_TXN))


@dataclass(frozen=True)
class TransactionSync:
    """Changes since the cursor, as Plaid's ``/transactions/sync`` reports them.

    Keep calling with ``next_cursor`` while ``has_more``; then store ``next_cursor``
    for the next sync. A pending entry that books later is removed + added.
    """

    added: list[TransactionOut]
    modified: list[TransactionOut]
    removed: list[RemovedTransaction]
    next_cursor: str
    has_more: bool


@dataclass(frozen=True)
class SyncOut:
    """What a sync run changed."""

    connection_id: str = field(metadata=rules(pattern=ID, example=EXAMPLE_CON))
    accounts: int
    added: int
    modified: int
    removed: int
    outcome: SyncOutcome = field(default=SyncOutcome.COMPLETE, metadata=rules(
        description="`partial` when some resource of some account was refused or missing "
                    "(the rest is committed; the run says which).",
    ))
    sync_id: str | None = field(default=None, metadata=rules(
        pattern=ID, description="The run, as `GET /v1/connections/{id}/syncs` lists it."))


@dataclass(frozen=True)
class SyncResourceOut:
    """What the bank answered for one resource of one account in a sync run."""

    account_id: str | None = field(metadata=rules(pattern=ID))
    resource: str = field(metadata=rules(example="balances"))
    outcome: ResourceOutcome
    error_code: str | None
    request_id: str | None = field(metadata=rules(
        description="The bank's id of the call (`x-fapi-interaction-id`, `X-Request-ID`), "
                    "for a support ticket at the bank.",
    ))


@dataclass(frozen=True)
class SyncRunOut:
    """One sync of a connection."""

    id: str = field(metadata=rules(pattern=ID))
    connection_id: str = field(metadata=rules(pattern=ID))
    trigger: str = field(metadata=rules(
        description="`link`, `on_demand`, `scheduled` or `webhook`."))
    outcome: SyncOutcome
    error: ErrorOut | None
    request_id: str | None = field(metadata=rules(
        description="The bank's id of the account-list call, or of the call that failed."))
    started_at: datetime
    finished_at: datetime
    accounts: int
    added: int
    modified: int
    removed: int
    resources: list[SyncResourceOut]


@dataclass(frozen=True)
class SyncRunPage:
    """Newest first; ``next_cursor`` is ``null`` on the last page."""

    data: list[SyncRunOut]
    next_cursor: str | None


@dataclass(frozen=True)
class SyncRunQuery:
    """Query of ``GET /v1/connections/{id}/syncs``."""

    cursor: str | None = field(default=None, metadata=rules(
        max_length=512, description="`next_cursor` of the previous page; omit to start.",
    ))
    limit: int = field(default=20, metadata=rules(minimum=1, maximum=100))


@dataclass(frozen=True)
class Health:
    status: str = field(metadata=rules(example="ok"))


@dataclass(frozen=True)
class RegionHealth:
    database: str = field(metadata=rules(example="ok"))
    keys: str = field(metadata=rules(example="ok"))


@dataclass(frozen=True)
class Readiness:
    status: str = field(metadata=rules(example="ready"))
    regions: dict[str, RegionHealth]


@dataclass(frozen=True)
class ProblemTypeOut:
    """The documentation of one problem ``type``."""

    type: str
    title: str
    status: int
    description: str
