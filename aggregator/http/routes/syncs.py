"""``GET /v1/connections/{id}/syncs``: a connection's recent sync runs, and sync state views.

The sync state shown on connections (``last_synced_at``, ``last_sync_outcome``,
``last_error``, ``in_flight``) and accounts (``freshness``) is built here too, so every
place that shows a connection or an account shows the same. Error messages come from
:data:`aggregator.sync.runs.MESSAGES`, keyed by our own codes: a bank's answer never
reaches an application.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import BaseRoute

from aggregator.http.cursors import decode_cursor, encode_cursor
from aggregator.http.problems import InvalidCursor
from aggregator.http.routes.owned import owned_connection
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.views import (
    ErrorOut,
    ResourceFreshness,
    SyncResourceOut,
    SyncRunOut,
    SyncRunPage,
    SyncRunQuery,
)
from aggregator.models import (
    AccountResource,
    Connection,
    Credential,
    ResourceOutcome,
    SyncRun,
    SyncState,
)
from aggregator.models.base import utcnow
from aggregator.sync.runs import message_for

CONNECTION_ID = {"id": "A connection id (`con_<region>_…`)."}
#: What ``in_flight`` reads for a connection whose refresh was cut off mid-way.
REFRESH_UNRESOLVED = "refresh_unresolved"


def error_view(code: str | None) -> ErrorOut | None:
    return None if code is None else ErrorOut(code, message_for(code))


async def sync_state(session: AsyncSession, connection: Connection
                     ) -> tuple[SyncState | None, str | None]:
    """The connection's sync state, and its in-flight mark (a refresh cut off mid-way:
    ``refresh_started_at`` set under a lapsed lease, until the refresh worker resolves it)."""
    state = await session.get(SyncState, connection.id)
    credential = (await session.execute(
        select(Credential.refresh_started_at, Credential.lease_expires_at)
        .where(Credential.connection_id == connection.id)
    )).first()
    in_flight = None
    if credential is not None and credential.refresh_started_at is not None and (
            credential.lease_expires_at is None or credential.lease_expires_at <= utcnow()):
        in_flight = REFRESH_UNRESOLVED
    return state, in_flight


def freshness_view(rows: list[AccountResource]) -> list[ResourceFreshness]:
    return [ResourceFreshness(r.resource, r.outcome, error_view(r.error_code), r.synced_at,
                              r.checked_at) for r in rows]


def run_view(run: SyncRun) -> SyncRunOut:
    return SyncRunOut(
        id=run.id, connection_id=run.connection_id, trigger=run.trigger, outcome=run.outcome,
        error=error_view(run.error_code), request_id=run.request_id,
        started_at=run.started_at, finished_at=run.finished_at, accounts=run.accounts,
        added=run.added, modified=run.modified, removed=run.removed,
        resources=[SyncResourceOut(r["account_id"], r["resource"], ResourceOutcome(r["outcome"]),
                                   r["error_code"], r["request_id"]) for r in run.resources],
    )


async def list_syncs(call: Call) -> SyncRunPage:
    """Newest first, keyset-paged on (``started_at``, ``id``): pages stay stable while new
    runs arrive."""
    connection_id, region = call.path_id("id", "con")
    query = call.query_as(SyncRunQuery)
    stmt = select(SyncRun).where(SyncRun.connection_id == connection_id)
    if query.cursor:
        at_text, last_id = decode_cursor(query.cursor, connection_id, 2)
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise InvalidCursor("the cursor does not decode") from None
        stmt = stmt.where(or_(SyncRun.started_at < at,
                              and_(SyncRun.started_at == at, SyncRun.id < last_id)))
    stmt = stmt.order_by(SyncRun.started_at.desc(), SyncRun.id.desc()).limit(query.limit + 1)
    async with call.services.router.reader(region) as session:
        await owned_connection(session, connection_id, call.caller)
        rows = list((await session.execute(stmt)).scalars())
    page = rows[:query.limit]
    cursor = None
    if len(rows) > query.limit:
        cursor = encode_cursor(connection_id, page[-1].started_at.isoformat(), page[-1].id)
    return SyncRunPage([run_view(r) for r in page], cursor)


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/v1/connections/{id}/syncs", list_syncs, "GET", Operation(
            summary="List a connection's recent sync runs, newest first",
            description=list_syncs.__doc__, response=SyncRunPage, query=SyncRunQuery,
            tags=("connections",), path_params=CONNECTION_ID,
        )),
    ]
