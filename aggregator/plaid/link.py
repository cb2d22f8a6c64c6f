"""Linking through Plaid: a Link token for the app's frontend, then the public token exchange.

Plaid Link runs in the app's frontend, not on our hosted page, so the two halves are API
calls of the app's backend around it:

1. ``POST /v1/link/sessions`` with ``bank_id`` "plaid" (or ``connection_id`` of a Plaid
   connection: update mode) stores the link session as for any bank, then asks Plaid for
   a Link token (:func:`plaid_link_token`): the region's products and country codes, its
   webhook URL ``{public_url}/webhooks/plaid/{region}``, and ``client_user_id`` = our
   random user id, never PII. In update mode the token is made with the Item's access
   token instead of products (Plaid "Update mode").
2. ``POST /v1/plaid/exchange`` (:func:`exchange`) takes the frontend's ``public_token``
   and the link session id. The session is claimed first (a compare-and-set, so a
   replayed or concurrent exchange writes nothing), then the public token is exchanged
   outside any transaction, and the connection, its sealed access token, the session's
   completion, the audit event and ``connection.created`` commit together. In update
   mode there is nothing to exchange (the Item keeps its access token): the Item is asked
   for its accounts to prove the login was repaired, and the connection keeps its id,
   becomes ``active`` and emits ``connection.reauthorized``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.errors import GatewayError, InvalidId
from aggregator.events.hooks import connection_event
from aggregator.ids import ConnectionId, new_id, parse_id
from aggregator.link.sessions import IssuedLink
from aggregator.models import (
    Connection,
    ConnectionStatus,
    Credential,
    LinkSession,
    LinkStatus,
)
from aggregator.models.base import table_of, utcnow
from aggregator.store import RegionRouter
from aggregator.sync.banks import PLAID_BANK_ID, BankDirectory
from aggregator.sync.job import Syncer
from aggregator.sync.tokens import load_credential
from connectors import ConnectorError, ItemLoginRequired, LinkToken, PlaidConnector, PlaidItem
from vault import Secret

log = logging.getLogger(__name__)
_links = table_of(LinkSession)


class PlaidLinkNotFound(GatewayError):
    """Raised when the link session is unknown, another app's, or not a Plaid session."""

    code = "not_found"


class PlaidLinkConflict(GatewayError):
    """Raised when the session was used, expired, or its connection cannot be repaired."""

    code = "conflict"


class PublicTokenMissing(GatewayError):
    """Raised when a new Plaid link is finished without Plaid Link's public token."""

    code = "validation_failed"


def webhook_url(base_url: str, region: str) -> str:
    """Where Plaid sends the region's webhooks: each region has its own path
    (docs/architecture.md, "Data residency")."""
    return f"{base_url.rstrip('/')}/webhooks/plaid/{region}"


async def plaid_link_token(
    router: RegionRouter, custody: RegionCustody, banks: BankDirectory, issued: IssuedLink,
    user_id: str, update_connection_id: str | None, base_url: str,
) -> LinkToken:
    """Ask Plaid for the session's Link token; a failure fails the session too."""
    region = custody.region
    connector = banks.plaid(region)
    access: Secret | None = None
    if update_connection_id is not None:
        access = await _access_token(router, custody, ConnectionId(update_connection_id))
    try:
        return await connector.create_link_token(
            user_id, webhook_url=webhook_url(base_url, region), access_token=access,
        )
    except ConnectorError as exc:
        log.warning("link %s: Plaid refused a link token: %s", issued.session_id, exc.code)
        await _finish(router, region, issued.session_id, LinkStatus.FAILED, user_id,
                      "link_session.error", None)
        raise


@dataclass(frozen=True, slots=True)
class Exchanged:
    """The connection a Plaid link produced or repaired."""

    connection_id: ConnectionId
    created: bool


async def exchange(
    router: RegionRouter, custody: Mapping[str, RegionCustody], banks: BankDirectory,
    syncer: Syncer, *, caller: str, link_session_id: str, public_token: Secret | None,
    request_id: str | None = None,
) -> Exchanged:
    """Finish a Plaid link session (see the module docstring); raises typed refusals."""
    region = _region(router, link_session_id)
    link = await _load(router, region, caller, link_session_id)
    if link.update_connection_id is None and public_token is None:
        raise PublicTokenMissing("public_token is required to finish a new Plaid link")
    await _claim(router, region, link)
    keys = custody[region]
    connector = banks.plaid(region)
    item: PlaidItem | None = None
    try:
        if link.update_connection_id is None:
            assert public_token is not None
            item = await connector.exchange_public_token(public_token)
        else:
            # Update mode keeps the access token; reading the accounts proves the Item
            # works again rather than trusting the frontend's word for it.
            await connector.get_accounts(
                await _access_token(router, keys, link.update_connection_id))
    except ItemLoginRequired:
        await _finish(router, region, link.id, LinkStatus.FAILED, link.user_id,
                      "link_session.error", request_id)
        raise PlaidLinkConflict("Plaid still asks for the user's login on this Item") from None
    except ConnectorError:
        await _finish(router, region, link.id, LinkStatus.FAILED, link.user_id,
                      "link_session.error", request_id)
        raise
    try:
        connection_id = await _save(router, keys, link, item, request_id)
    except BaseException:
        await _finish(router, region, link.id, LinkStatus.FAILED, link.user_id,
                      "link_session.error", request_id)
        if item is not None:  # never leave a live Item at Plaid that nothing holds
            await _forget(connector, item, link.id)
        raise
    try:  # the link stands even if the first sync fails (as for the OAuth banks)
        await syncer.sync(connection_id, actor="gateway", request_id=request_id,
                          budgeted=False)  # the user is present (the Link flow's first sync)
    except (ConnectorError, GatewayError) as exc:
        log.warning("connection %s: first sync failed: %s", connection_id, exc.code)
    return Exchanged(connection_id, item is not None)


def _region(router: RegionRouter, link_session_id: str) -> str:
    try:
        region = parse_id(link_session_id, kind="lnk", regions=router.regions).region
    except InvalidId:
        raise PlaidLinkNotFound("no such link session") from None
    assert region is not None  # link session ids are regional
    return region


async def _load(router: RegionRouter, region: str, caller: str, link_id: str) -> LinkSession:
    async with router.reader(region) as session:
        link = await session.get(LinkSession, link_id)
    if link is None or link.application_id != caller or link.bank_id != PLAID_BANK_ID:
        raise PlaidLinkNotFound("no such Plaid link session for this application")
    if link.status is not LinkStatus.PENDING:
        raise PlaidLinkConflict(f"the link session is {link.status.value}")
    if utcnow() >= link.expires_at:
        raise PlaidLinkConflict("the link session expired")
    return link


async def _claim(router: RegionRouter, region: str, link: LinkSession) -> None:
    c = _links.c
    now = utcnow()
    async with router.session(region) as session, session.begin():
        moved = await session.execute(
            update(_links).where(c.id == link.id, c.status == LinkStatus.PENDING,
                                 c.expires_at > now, c.used_at.is_(None))
            .values(status=LinkStatus.AUTHORIZING, used_at=now)
        )
    if getattr(moved, "rowcount", 0) != 1:
        raise PlaidLinkConflict("the link session was already used")


async def _access_token(router: RegionRouter, custody: RegionCustody,
                        connection_id: ConnectionId) -> Secret:
    async with router.reader(custody.region) as session:
        connection = await session.get(Connection, connection_id)
        if connection is None:
            raise PlaidLinkNotFound(f"no connection {connection_id}")
        credential = await load_credential(session, connection_id)
        key = await custody.data_keys.load(session, connection.user_id)
    token = await custody.sealer.open_from(key, credential, "access_token_sealed")
    if token is None:
        raise PlaidLinkConflict(f"connection {connection_id} holds no Plaid access token")
    return Secret(token)


async def _save(router: RegionRouter, custody: RegionCustody, link: LinkSession,
                item: PlaidItem | None, request_id: str | None) -> ConnectionId:
    now = utcnow()
    async with router.session(custody.region) as session, session.begin():
        if item is None:
            assert link.update_connection_id is not None
            connection = await _repair(session, link.update_connection_id, now)
        else:
            connection = await _create(session, custody, link, item, now)
        await session.execute(update(_links).where(_links.c.id == link.id).values(
            status=LinkStatus.COMPLETED, connection_id=connection.id,
        ))
        await audit.record(
            session, actor=link.user_id, target_id=connection.id, request_id=request_id,
            action="connection.linked" if item is not None else "connection.relinked",
        )
        await connection_event(session, connection.id, "connection.created"
                               if item is not None else "connection.reauthorized")
    return connection.id


async def _create(session: AsyncSession, custody: RegionCustody, link: LinkSession,
                  item: PlaidItem, now: datetime) -> Connection:
    key = await custody.data_keys.load(session, link.user_id)  # before add: no autoflush
    connection = Connection(
        id=new_id("con", custody.region), user_id=link.user_id,
        application_id=link.application_id, bank_id=PLAID_BANK_ID,
        status=ConnectionStatus.ACTIVE, external_ref=item.item_id[:255],
        created_at=now, updated_at=now,
    )
    # Plaid access tokens do not expire and have no refresh token: refresh_due_at stays
    # None, so the refresh workers never lease this credential.
    credential = Credential(id=new_id("crd", custody.region), connection_id=connection.id,
                            user_id=link.user_id)
    await custody.sealer.seal_into(key, credential, "access_token_sealed",
                                   item.access_token.reveal(), session=session)
    session.add_all([connection, credential])
    await session.flush()
    return connection


async def _repair(session: AsyncSession, connection_id: ConnectionId, now: datetime) -> Connection:
    connection = (await session.execute(
        select(Connection).where(Connection.id == connection_id).with_for_update()
    )).scalar_one_or_none()
    if connection is None or connection.status is ConnectionStatus.REVOKED:
        raise PlaidLinkConflict("the connection was revoked meanwhile; link anew")
    connection.status = ConnectionStatus.ACTIVE
    connection.status_reason = None
    connection.updated_at = now
    await session.flush()
    return connection


async def _forget(connector: PlaidConnector, item: PlaidItem, link_id: str) -> None:
    try:
        await connector.remove_item(item.access_token)
    except ConnectorError as exc:
        log.error("link %s: an exchanged Plaid Item could not be stored nor removed (%s); "
                  "remove it in Plaid's dashboard", link_id, exc.code)


async def _finish(router: RegionRouter, region: str, link_id: str, status: LinkStatus,
                  actor: str, action: str, request_id: str | None) -> None:
    async with router.session(region) as session, session.begin():
        await session.execute(update(_links).where(_links.c.id == link_id)
                              .values(status=status))
        await audit.record(session, actor=actor, action=action, target_id=link_id,
                           request_id=request_id)
