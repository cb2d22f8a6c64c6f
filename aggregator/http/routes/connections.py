"""``/v1/connections``: a user's grants at banks; revoking one ends it at the bank too.

``POST /v1/connections/{id}/sync`` spends the connection's rate budget (the bank
profile's ``[sync]`` table, :mod:`aggregator.sync.budget`: per account and data type,
the reserve included) before it calls the bank; over budget it answers 429 with
``Retry-After`` and ``next_sync_allowed_at``, which reads also report, and counts it in
``aggregator_sync_budget_exhausted_total{reason="on_demand"}``.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import BaseRoute

from aggregator import audit
from aggregator.http.problems import (
    Conflict,
    FieldError,
    NotImplementedYet,
    SyncBudgetExhausted,
    ValidationFailed,
)
from aggregator.http.routes.owned import connection_view, owned_connection, owned_user
from aggregator.http.routes.syncs import sync_state
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.services import Services
from aggregator.http.views import ConnectionList, ConnectionOut, SyncOut
from aggregator.ids import ConnectionId
from aggregator.models import Connection, ConnectionStatus, Credential, SyncOutcome
from aggregator.models.base import utcnow
from aggregator.sync import (
    BankDirectory,
    BudgetExhausted,
    BudgetMetrics,
    UnknownBank,
    spend_for_sync,
)
from aggregator.sync import next_allowed_at as budget_allows_at
from connectors import BankUnsupported, SyncPolicy, UserPresence
from vault import Secret

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
        return ConnectionList([await _view(session, call.services, c) for c in rows])


async def get_connection(call: Call) -> ConnectionOut:
    connection_id, region = call.path_id("id", "con")
    async with call.services.router.reader(region) as session:
        connection = await owned_connection(session, connection_id, call.caller)
        return await _view(session, call.services, connection)


def sync_policy(services: Services, bank_id: str, region: str | None = None) -> SyncPolicy:
    """The bank's ``[sync]`` policy; the PSD2 default when no profile is at hand."""
    if isinstance(services.banks, BankDirectory):
        if services.banks.is_plaid(bank_id) and region is not None:
            return services.banks.plaid_policy(region)
        try:
            return services.banks.profile(bank_id).sync
        except UnknownBank:
            pass
    return SyncPolicy()


async def _view(session: AsyncSession, services: Services, connection: Connection
                ) -> ConnectionOut:
    allowed: datetime | None = None
    if connection.status is ConnectionStatus.ACTIVE:
        policy = sync_policy(services, connection.bank_id,
                             services.router.region_of(connection.id))
        allowed = await budget_allows_at(session, connection.id, policy, utcnow())
    state, in_flight = await sync_state(session, connection)
    return connection_view(connection, allowed, state, in_flight)


async def delete_connection(call: Call) -> ConnectionOut:
    """Revoke at the bank first, then forget the tokens and mark the connection revoked.

    OAuth banks get an RFC 7009 revocation of the refresh token (or the access token);
    a bank with a consent resource (UK Open Banking, Berlin Group) first gets its
    ``DELETE`` of that consent; a Plaid connection's Item is removed with Plaid's
    ``/item/remove``.

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
    banks = services.banks
    plaid = isinstance(banks, BankDirectory) and banks.is_plaid(connection.bank_id)
    if token is not None and plaid and isinstance(banks, BankDirectory):
        # Plaid has no RFC 7009 endpoint: /item/remove invalidates the access token.
        await banks.plaid(region).remove_item(Secret(token))
    consent_deleted = not plaid and await _delete_consent(banks, connection)
    if token is not None and not plaid:
        try:
            # Revoking the refresh token ends the whole grant (RFC 7009 §2.1).
            await services.banks.oauth(connection.bank_id).revoke(
                token, "refresh_token" if refresh else "access_token"
            )
        except BankUnsupported:
            log.warning("bank %s offers no revocation; revoking %s locally only",
                        connection.bank_id, connection_id)
            if not consent_deleted:  # the consent's DELETE already ended the grant
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


async def _delete_consent(banks: object, connection: Connection) -> bool:
    """DELETE the bank's consent resource first (OBIE, Berlin Group: connectors/consents);
    an unreachable bank raises, so the caller retries and nothing is forgotten early."""
    if connection.consent_id is None or not isinstance(banks, BankDirectory):
        return False
    manager = banks.consents(connection.bank_id)
    if manager is None:
        return False
    await manager.revoke(connection.consent_id)
    return True


#: The app forwards its user's address on an on-demand sync to say "the user is here".
CUSTOMER_IP_HEADER = "X-Customer-IP-Address"


def _presence(call: Call) -> UserPresence | None:
    """User-present when the app forwards the user's IP address (connectors/consents)."""
    raw = call.request.headers.get(CUSTOMER_IP_HEADER)
    if raw is None:
        return None
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        raise ValidationFailed([FieldError(
            f"{CUSTOMER_IP_HEADER} must be an IPv4 or IPv6 address",
            parameter=CUSTOMER_IP_HEADER)]) from None
    return UserPresence(str(address), None)


async def post_sync(call: Call) -> SyncOut:
    """Sync now, spending one unit of the bank's rate budget per data type.

    An app whose user is at the screen forwards the user's address in
    ``X-Customer-IP-Address``: the call is then user-present, and banks that ask for it
    see the address (UK Open Banking ``x-fapi-customer-ip-address``, Berlin Group
    ``PSU-IP-Address``).

    Over budget the answer is 429 with ``Retry-After`` and ``next_sync_allowed_at``. A
    unit whose call never reached the bank (refused while connecting, or never made) is
    refunded, as for scheduled syncs; one the bank answered, or may have counted, is not.
    """
    connection_id, region = call.path_id("id", "con")
    services = call.services
    async with services.router.reader(region) as session:
        connection = await owned_connection(session, connection_id, call.caller)
    if connection.status is not ConnectionStatus.ACTIVE:
        raise Conflict(f"the connection is {connection.status.value}; only active "
                       "connections sync")
    if services.sync is None:
        raise NotImplementedYet("this deployment has no sync job configured")
    # Plaid's /transactions/sync is one item-level call: no per-account ledgers to spend.
    item_level = isinstance(services.banks, BankDirectory) and services.banks.is_plaid(
        connection.bank_id)
    try:
        spent_at = await spend_for_sync(
            services.router, ConnectionId(connection_id),
            sync_policy(services, connection.bank_id, region), reason="on_demand",
            accounts=() if item_level else None,
            metrics=BudgetMetrics.of(call.request.app.state.metrics.registry))
    except BudgetExhausted as exc:
        raise SyncBudgetExhausted(
            str(exc), extra={"next_sync_allowed_at": exc.next_allowed_at.isoformat()},
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
    summary = await services.sync(
        ConnectionId(connection_id), request_id=call.request_id, actor=call.caller,
        presence=_presence(call), spent_at=spent_at,
    )
    return SyncOut(connection_id, summary.accounts, summary.added, summary.modified,
                   summary.removed, SyncOutcome(summary.outcome), summary.sync_id)


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/v1/connections/{id}", get_connection, "GET", Operation(
            description=(
                "The connection's status (and a short `status_reason` code), its bank, "
                "consent expiry, and `next_sync_allowed_at` under the bank's "
                "sync budget."
            ),
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
            description=post_sync.__doc__, response=SyncOut,
            errors=(409, 422, 429, 501, 502, 503), tags=("connections",),
            path_params=CONNECTION_ID,
        )),
    ]
