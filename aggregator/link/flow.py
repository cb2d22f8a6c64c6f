"""The two halves of linking around the bank: sending the user there, and coming back.

:meth:`LinkFlow.authorize` runs when the user picks a bank: it starts the authorization
(PKCE S256, ``state``, PAR where the bank offers it, all in
:class:`~connectors.BankOAuthClient`), stores the pending authorization sealed in the
session row (``state`` only as its SHA-256, for the callback's lookup) and spends the
link token, in one compare-and-set on the session's status.

:meth:`LinkFlow.complete` is the OAuth callback. It claims the session first (a replayed
or concurrent callback finds it claimed and writes nothing), checks ``state`` and ``iss``
(:func:`~connectors.parse_callback`), exchanges the code, and commits the connection,
its credential, the session's completion and the audit event in one transaction. Only
then does it sync, inline, and answer with the app's redirect URI carrying
``connection_id`` and ``outcome`` — never a token or a code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import select, update

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.errors import GatewayError, InvalidId
from aggregator.events.hooks import connection_event
from aggregator.ids import ConnectionId, new_secret, parse_secret, secret_digest
from aggregator.link.errors import LinkNotFound, LinkUsed
from aggregator.link.grants import save_grant
from aggregator.link.sessions import OpenedLink, check_form
from aggregator.models import LinkSession, LinkStatus
from aggregator.models.base import table_of, utcnow
from aggregator.sealing import Field
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory
from aggregator.sync.job import Syncer
from connectors import ConnectorError, ConsentRejected, PendingAuthorization, parse_callback

log = logging.getLogger(__name__)

_links = table_of(LinkSession)

SUCCESS, DENIED, ERROR = "success", "denied", "error"
_NO_LINK = "Your bank sent you back with an answer that belongs to no link we know of."


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where the browser goes after the callback: the app's redirect URI, annotated."""

    redirect_to: str
    outcome: str
    connection_id: ConnectionId | None


def app_redirect(redirect_uri: str, connection_id: str | None, outcome: str) -> str:
    """``redirect_uri`` with exactly ``connection_id`` (when known) and ``outcome`` added."""
    parts = urlsplit(redirect_uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("connection_id", "outcome")]
    if connection_id is not None:
        query.append(("connection_id", connection_id))
    query.append(("outcome", outcome))
    return urlunsplit(parts._replace(query=urlencode(query)))


class LinkFlow:
    """The bank-facing steps of the Link flow, for every region.

    Example::

        flow = LinkFlow(router, custody, banks, syncer)
        url = await flow.authorize(opened, nonce, bank_id, callback_url)   # 303 there
        outcome = await flow.complete(request.query_params)
    """

    def __init__(
        self, router: RegionRouter, custody: Mapping[str, RegionCustody],
        banks: BankDirectory, syncer: Syncer,
    ) -> None:
        self.router = router
        self.custody = custody
        self.banks = banks
        self.syncer = syncer

    async def authorize(
        self, opened: OpenedLink, nonce: str, bank_id: str, callback_url: str,
        *, client_ip: str | None = None,
    ) -> str:
        """Start the bank's authorization; returns the URL to send the browser to."""
        custody = self.custody[opened.region]
        bank_id = check_form(opened, custody, nonce, bank_id)
        pending, url = await self.banks.oauth(bank_id).start_authorization(
            callback_url, state=new_secret("sta", opened.region)
        )
        link = opened.session
        kept = pending.to_dict()
        nonce_value = kept.pop("nonce")
        del kept["state"]  # stored only as a digest; the callback brings it back
        now = utcnow()
        c = _links.c
        async with self.router.session(opened.region) as session, session.begin():
            key = await custody.data_keys.load(session, link.user_id)

            async def seal(column: str, value: str | None) -> bytes | None:
                if value is None:
                    return None
                place = Field("link_sessions", column, link.id, link.user_id)
                return await custody.sealer.seal(key, place, value, session=session)

            moved = await session.execute(
                update(_links)
                .where(c.id == link.id, c.status == LinkStatus.PENDING, c.expires_at > now)
                .values(
                    status=LinkStatus.AUTHORIZING, bank_id=bank_id,
                    state_digest=secret_digest(pending.state),
                    pkce_verifier_sealed=await seal("pkce_verifier_sealed", json.dumps(kept)),
                    nonce_sealed=await seal("nonce_sealed", nonce_value),
                )
            )
            if getattr(moved, "rowcount", 0) != 1:
                raise LinkUsed("A bank was already chosen with this link.")
            await audit.record(
                session, actor=link.user_id, action="link_session.authorizing",
                target_id=link.id, client_ip=_network(client_ip),
            )
        return url

    async def cancel(
        self, opened: OpenedLink, nonce: str, *, client_ip: str | None = None,
        request_id: str | None = None,
    ) -> Outcome:
        """The person chose "cancel and return to the app" before picking a bank: the
        session ends (``failed``) and the app hears ``outcome=cancelled``."""
        check_form(opened, self.custody[opened.region], nonce, None)
        link, now = opened.session, utcnow()
        c = _links.c
        async with self.router.session(opened.region) as session, session.begin():
            moved = await session.execute(
                update(_links)
                .where(c.id == link.id, c.status == LinkStatus.PENDING, c.expires_at > now)
                .values(status=LinkStatus.FAILED, used_at=now)
            )
            if getattr(moved, "rowcount", 0) != 1:
                raise LinkUsed("A bank was already chosen with this link.")
            await audit.record(
                session, actor=link.user_id, action="link_session.cancelled",
                target_id=link.id, request_id=request_id, client_ip=_network(client_ip),
            )
        target = link.update_connection_id
        return Outcome(app_redirect(link.redirect_uri, target, "cancelled"), "cancelled",
                       target)

    async def complete(
        self, query: Mapping[str, str], *,
        client_ip: str | None = None, request_id: str | None = None,
    ) -> Outcome:
        """Handle the bank's redirect back; raises :class:`LinkError` for an error page."""
        state = query.get("state") or ""
        region, link = await self._find(state)
        custody = self.custody[region]
        await self._claim(region, link)
        try:
            pending = await self._pending(custody, link, state)
            oauth = self.banks.oauth(pending.bank_id)
            code = parse_callback(pending, query, await oauth.metadata())
            tokens = await oauth.exchange_code(pending, code)
        except ConsentRejected:
            return await self._fail(region, link, DENIED, request_id)
        except ConnectorError as exc:
            log.warning("link %s: callback failed: %s", link.id, exc.code)
            return await self._fail(region, link, ERROR, request_id)
        now = utcnow()
        consent = self.banks.profile(pending.bank_id).consent
        expires = consent.expires_at(now, tokens.consent_expires_at)
        async with self.router.session(region) as session, session.begin():
            key = await custody.data_keys.load(session, link.user_id)
            saved = await save_grant(session, custody, key, link, pending.bank_id, tokens, now,
                                     consent_expires_at=expires, dpop_key=pending.dpop_key)
            await session.execute(update(_links).where(_links.c.id == link.id).values(
                status=LinkStatus.COMPLETED, connection_id=saved.connection.id,
            ))
            await audit.record(
                session, actor=link.user_id, target_id=saved.connection.id,
                action="connection.linked" if saved.created else "connection.relinked",
                request_id=request_id, client_ip=_network(client_ip),
            )
            await connection_event(
                session, saved.connection.id,
                "connection.created" if saved.created else "connection.reauthorized",
                consent_expires_at=expires.isoformat() if expires else None,
            )
        connection_id = saved.connection.id
        await self._after(connection_id, pending.bank_id, saved.superseded, request_id)
        return Outcome(app_redirect(link.redirect_uri, connection_id, SUCCESS), SUCCESS,
                       connection_id)

    async def _find(self, state: str) -> tuple[str, LinkSession]:
        # Our `state` names its region (`sta_eu_…`): one region's store is asked, as
        # DESIGN's routing-without-a-global-lookup requires.
        try:
            region = parse_secret(state, kind="sta", regions=self.router.regions)
        except InvalidId:
            raise LinkNotFound(_NO_LINK) from None
        async with self.router.reader(region) as session:
            link = (await session.execute(
                select(LinkSession).where(LinkSession.state_digest == secret_digest(state))
            )).scalar_one_or_none()
        if link is None:
            raise LinkNotFound(_NO_LINK)
        return region, link

    async def _claim(self, region: str, link: LinkSession) -> None:
        c = _links.c
        async with self.router.session(region) as session, session.begin():
            moved = await session.execute(
                update(_links)
                .where(c.id == link.id, c.status == LinkStatus.AUTHORIZING, c.used_at.is_(None))
                .values(used_at=utcnow())
            )
        if getattr(moved, "rowcount", 0) != 1:
            raise LinkUsed("Your bank's answer for this link was already received.")

    async def _pending(
        self, custody: RegionCustody, link: LinkSession, state: str
    ) -> PendingAuthorization:
        async with self.router.reader(custody.region) as session:
            key = await custody.data_keys.load(session, link.user_id)
        kept = await custody.sealer.open_from(key, link, "pkce_verifier_sealed")
        nonce = await custody.sealer.open_from(key, link, "nonce_sealed")
        if kept is None:
            raise LinkNotFound(_NO_LINK)
        data = json.loads(kept)
        data.update(state=state, nonce=nonce)
        return PendingAuthorization.from_dict(data)

    async def _fail(
        self, region: str, link: LinkSession, outcome: str, request_id: str | None
    ) -> Outcome:
        async with self.router.session(region) as session, session.begin():
            await session.execute(update(_links).where(_links.c.id == link.id).values(
                status=LinkStatus.FAILED,
            ))
            await audit.record(
                session, actor=link.user_id, action=f"link_session.{outcome}",
                target_id=link.id, request_id=request_id,
            )
        target = link.update_connection_id
        return Outcome(app_redirect(link.redirect_uri, target, outcome), outcome, target)

    async def _after(
        self, connection_id: ConnectionId, bank_id: str, superseded: str | None,
        request_id: str | None,
    ) -> None:
        # The link stands even if the first sync fails: the app sees the connection and
        # `sync_states.last_error`, and can sync again.
        try:
            # The user is here: PSD2 RTS Art. 36(5) budgets only unattended calls.
            await self.syncer.sync(connection_id, actor="gateway", request_id=request_id,
                                   budgeted=False)
        except (ConnectorError, GatewayError) as exc:
            log.warning("connection %s: first sync failed: %s", connection_id, exc.code)
        if superseded:
            try:
                await self.banks.oauth(bank_id).revoke(superseded, "refresh_token")
            except ConnectorError as exc:
                log.warning("connection %s: old grant not revoked: %s", connection_id, exc.code)


def _network(client_ip: str | None) -> str | None:
    # An end user's address is personal data: the audit trail keeps its network only.
    if client_ip is None:
        return None
    try:
        return audit.anonymize_ip(client_ip)
    except ValueError:
        return None
