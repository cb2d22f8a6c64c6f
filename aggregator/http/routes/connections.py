"""``/v1/connections``: a user's grants at banks; revoking one ends it at the bank too."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from starlette.routing import BaseRoute

from aggregator import audit
from aggregator.http.problems import Conflict, NotImplementedYet
from aggregator.http.routes.owned import connection_view, owned_connection, owned_user
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.views import ConnectionList, ConnectionOut, SyncOut
from aggregator.ids import ConnectionId
from aggregator.models import Connection, ConnectionStatus, Credential
from connectors import BankUnsupported

log = logging.getLogger(__name__)

CONNECTION_ID = {"id": "A connection id (`con_<region>_…`)."}


async def list_user_connections(call: Call, user_id: str, region: str) -> ConnectionList:
    async with call.services.router.reader(region) as session:
        await owned_user(session, user_id, call.caller)
        rows = (await session.execute(
            select(Connection)
            .where(Connection.user_id == user_id, Connection.application_id == call.caller)
            .order_by(Connection.created_at, Connection.id)
        )).scalars()
        return ConnectionList([connection_view(c) for c in rows])


async def get_connection(call: Call) -> ConnectionOut:
    connection_id, region = call.path_id("id", "con")
    async with call.services.router.reader(region) as session:
        return connection_view(await owned_connection(session, connection_id, call.caller))


async def delete_connection(call: Call) -> ConnectionOut:
    """Revoke at the bank first, then forget the tokens and mark the connection revoked.

    The bank call happens outside any transaction (no lock is held across the network).
    If the bank cannot be reached the connection stays as it was and the caller gets a
    503 to retry; only a bank without a revocation endpoint is revoked locally alone,
    with ``status_reason`` saying so.
    """
    connection_id, region = call.path_id("id", "con")
    services = call.services
    custody = services.custody[region]
    async with services.router.reader(region) as session:
        connection = await owned_connection(session, connection_id, call.caller)
        if connection.status is ConnectionStatus.REVOKED:
            return connection_view(connection)  # DELETE is idempotent
        credential = (await session.execute(
            select(Credential).where(Credential.connection_id == connection_id)
        )).scalar_one_or_none()
        token, refresh = None, False
        if credential is not None:
            key = await custody.data_keys.load(session, connection.user_id)
            refresh = credential.refresh_token_sealed is not None
            column = "refresh_token_sealed" if refresh else "access_token_sealed"
            token = await custody.sealer.open_from(key, credential, column)
    reason = "revoked_by_application"
    if token is not None:
        try:
            # Revoking the refresh token ends the whole grant (RFC 7009 §2.1).
            await services.banks.oauth(connection.bank_id).revoke(
                token, "refresh_token" if refresh else "access_token"
            )
        except BankUnsupported:
            log.warning("bank %s offers no revocation; revoking %s locally only",
                        connection.bank_id, connection_id)
            reason = "bank_revocation_unsupported"
    async with services.router.session(region) as session, session.begin():
        connection = await owned_connection(session, connection_id, call.caller)
        if connection.status is not ConnectionStatus.REVOKED:
            connection.status = ConnectionStatus.REVOKED
            connection.status_reason = reason
            await session.execute(
                delete(Credential).where(Credential.connection_id == connection_id)
            )
            await session.flush()
            await audit.record(
                session, actor=call.caller, action="connection.revoked",
                target_id=connection_id, request_id=call.request_id,
                client_ip=call.client_ip,
            )
    return connection_view(connection)


async def post_sync(call: Call) -> SyncOut:
    connection_id, region = call.path_id("id", "con")
    services = call.services
    async with services.router.reader(region) as session:
        connection = await owned_connection(session, connection_id, call.caller)
    if connection.status is not ConnectionStatus.ACTIVE:
        raise Conflict(f"the connection is {connection.status.value}; only active "
                       "connections sync")
    if services.sync is None:
        raise NotImplementedYet("this deployment has no sync job configured")
    summary = await services.sync(
        ConnectionId(connection_id), request_id=call.request_id, actor=call.caller
    )
    return SyncOut(connection_id, summary.accounts, summary.added, summary.modified,
                   summary.removed)


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/v1/connections/{id}", get_connection, "GET", Operation(
            summary="Get a connection", response=ConnectionOut, tags=("connections",),
            path_params=CONNECTION_ID,
        )),
        ApiRoute("/v1/connections/{id}", delete_connection, "DELETE", Operation(
            summary="Revoke a connection at the bank and forget its tokens",
            description=delete_connection.__doc__, response=ConnectionOut,
            errors=(502, 503), tags=("connections",), path_params=CONNECTION_ID,
        )),
        ApiRoute("/v1/connections/{id}/sync", post_sync, "POST", Operation(
            summary="Sync a connection's accounts and transactions now",
            response=SyncOut, errors=(409, 501, 502, 503), tags=("connections",),
            path_params=CONNECTION_ID,
        )),
    ]
