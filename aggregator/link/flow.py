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

import dataclasses
import json
import logging
import time
from collections.abc import Mapping

from sqlalchemy import select, update

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.errors import GatewayError, InvalidId
from aggregator.events.hooks import connection_event
from aggregator.events.outbox import emit
from aggregator.ids import ConnectionId, new_secret, parse_secret, secret_digest
from aggregator.link import browser as browser_binding
from aggregator.link.errors import LinkNotFound, LinkOtherBrowser, LinkUsed
from aggregator.link.grants import SavedGrant, save_grant
from aggregator.link.misconfiguration import BankNotLinkable, link_failed, report
from aggregator.link.outcome import DENIED, ERROR, SUCCESS, Outcome, app_redirect
from aggregator.link.picking import LIST_STEP, offer_accounts
from aggregator.link.sessions import OpenedLink, check_form
from aggregator.models import LinkSession, LinkStatus
from aggregator.models.base import table_of, utcnow
from aggregator.sealing import Field
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory
from aggregator.sync.job import Syncer
from connectors import (
    AuthorizationExpired,
    BankMisconfigured,
    ConnectorError,
    ConsentInvalid,
    ConsentManager,
    ConsentRejected,
    ConsentRequest,
    CreatedConsent,
    GrantedConsent,
    PendingAuthorization,
    TokenSet,
    UserPresence,
    parse_callback,
)

log = logging.getLogger(__name__)

_links = table_of(LinkSession)

_NO_LINK = "Your bank sent you back with an answer that belongs to no link we know of."


class LinkFlow:
    """The bank-facing steps of the Link flow, for every region.

    Example::

        flow = LinkFlow(router, custody, banks, syncer)
        url = await flow.authorize(opened, nonce, bank_id, callback_url)   # 303 there
        outcome = await flow.complete(request.query_params, browser=cookie)
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
        state = new_secret("sta", opened.region)
        link = opened.session
        try:
            created, pending, url = await self._start(bank_id, callback_url, state, client_ip)
        except BankMisconfigured as exc:
            report(exc, bank_id)
            await self._fail(opened.region, link, ERROR, None, reason=exc.reason,
                             bank_id=bank_id)
            raise BankNotLinkable(exc, bank_id) from None
        kept: dict[str, object] = dict(pending.to_dict())
        if created is not None:
            kept["consent"] = created.to_dict()  # sealed with the rest: needed at the callback
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
                    nonce_sealed=await seal("nonce_sealed", nonce_value
                                            if isinstance(nonce_value, str) else None),
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
        session ends (``failed``), the browser returns with ``outcome=cancelled`` and the
        app's backend gets ``link.cancelled`` (a user's choice, not a ``link.failed``)."""
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
            await emit(session, link.application_id, "link.cancelled",
                       {"link_session_id": link.id, "user_id": link.user_id})
        target = link.update_connection_id
        return Outcome(app_redirect(link.redirect_uri, target, "cancelled"), "cancelled",
                       target)

    def _consent_call(self, region: str, bank_id: str, outcome: str, started: float) -> None:
        """Count a consent-resource call (docs/architecture.md, "Bank health"; batched)."""
        recorder = self.syncer.recorder
        if recorder is not None:
            recorder.call(region, bank_id, "consent", outcome, time.perf_counter() - started)

    async def _start(
        self, bank_id: str, callback_url: str, state: str, client_ip: str | None,
        *, account_ids: tuple[str, ...] = (),
    ) -> tuple[CreatedConsent | None, PendingAuthorization, str]:
        """The consent resource first, where the bank's standard has one, then OAuth."""
        oauth = self.banks.oauth(bank_id)
        manager = self.banks.consents(bank_id)
        if manager is None:
            pending, url = await oauth.start_authorization(callback_url, state=state)
            return None, pending, url
        profile = self.banks.profile(bank_id)
        now = utcnow()
        started = time.perf_counter()
        try:
            created = await manager.create(ConsentRequest(
                callback_url=callback_url, state=state,
                valid_until=profile.consent.expires_at(now),
                presence=UserPresence(client_ip, now), account_ids=account_ids,
            ))
        except ConnectorError as exc:
            self._consent_call(profile.region, bank_id, exc.code, started)
            raise
        self._consent_call(profile.region, bank_id, "ok", started)
        if created.redirect_url is not None:  # the bank's SCA page replaces OAuth
            pending = PendingAuthorization.new(bank_id, callback_url, with_nonce=False,
                                               now=now, state=state)
            return created, pending, created.redirect_url

        async def customize(params: dict[str, str]) -> dict[str, str]:
            return await manager.authorization_params(created, params)

        try:
            pending, url = await oauth.start_authorization(
                callback_url, state=state, customize=customize)
        except ConnectorError:  # e.g. the bank refused the request object at PAR
            await self._discard(manager, created, None)
            raise
        return created, pending, url

    async def complete(
        self, query: Mapping[str, str], *,
        client_ip: str | None = None, request_id: str | None = None,
        browser: str | None = None,
    ) -> Outcome:
        """Handle the bank's redirect back; raises :class:`LinkError` for an error page.

        ``browser`` is the binding cookie the request carried
        (:mod:`aggregator.link.browser`); without the one the session was bound to, the
        callback is refused before anything is claimed.
        """
        state = query.get("state") or ""
        region, link = await self._find(state)
        if not browser_binding.matches(link.browser_digest, browser):
            raise LinkOtherBrowser("Your bank sent you back to a different browser than "
                                   "the one where you started.")
        custody = self.custody[region]
        await self._claim(region, link)
        created: CreatedConsent | None = None
        manager: ConsentManager | None = None
        try:
            pending, created = await self._pending(custody, link, state)
            oauth = self.banks.oauth(pending.bank_id)
            manager = self.banks.consents(pending.bank_id) if created else None
            if created is not None and created.redirect_url is not None:
                if pending.is_expired(utcnow()):  # as parse_callback checks an OAuth answer
                    raise AuthorizationExpired(f"{pending.bank_id}: the SCA redirect expired")
                tokens = _consent_only()
            else:
                code = parse_callback(pending, query, await oauth.metadata())
                expected = created.id_token_claims if created is not None else {}
                if expected or "id_token" in query:  # the hybrid flow: believe nothing unsigned
                    await oauth.check_front_channel(pending, query, expected)
                tokens = await oauth.exchange_code(pending, code)
            granted: GrantedConsent | None = None
            if manager is not None and created is not None:
                granted = await manager.confirm(created)  # ConsentInvalid unless authorised
        except (ConsentRejected, ConsentInvalid):  # the user (or the bank) said no
            await self._discard(manager, created, link)
            return await self._fail(region, link, DENIED, request_id, reason="access_denied")
        except BankMisconfigured as exc:
            report(exc, link.bank_id or "?")
            await self._discard(manager, created, link)
            failed = await self._fail(region, link, ERROR, request_id, reason=exc.reason)
            return dataclasses.replace(failed, misconfigured=exc,
                                       misconfigured_bank=link.bank_id)
        except ConnectorError as exc:
            log.warning("link %s: callback failed: %s", link.id, exc.code)
            await self._discard(manager, created, link)
            return await self._fail(region, link, ERROR, request_id, reason=exc.code)
        if created is not None and created.data.get("step") == LIST_STEP:
            return await offer_accounts(self, region, link, pending, created, tokens,
                                        client_ip, request_id)
        now = utcnow()
        consent = self.banks.profile(pending.bank_id).consent
        expires = consent.expires_at(
            now, granted.expires_at if granted is not None else tokens.consent_expires_at)
        async with self.router.session(region) as session, session.begin():
            key = await custody.data_keys.load(session, link.user_id)
            saved = await save_grant(session, custody, key, link, pending.bank_id, tokens, now,
                                     consent_expires_at=expires,
                                     consent_id=granted.id if granted else None,
                                     dpop_key=pending.dpop_key)
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
        await self._after(connection_id, pending.bank_id, saved, request_id,
                          UserPresence(client_ip, now) if client_ip else None)
        return Outcome(app_redirect(link.redirect_uri, connection_id, SUCCESS), SUCCESS,
                       connection_id)

    async def _find(self, state: str) -> tuple[str, LinkSession]:
        # Our `state` names its region (`sta_eu_…`): one region's store is asked, as
        # routing without a global lookup requires (docs/architecture.md, "Data residency").
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
    ) -> tuple[PendingAuthorization, CreatedConsent | None]:
        async with self.router.reader(custody.region) as session:
            key = await custody.data_keys.load(session, link.user_id)
        kept = await custody.sealer.open_from(key, link, "pkce_verifier_sealed")
        nonce = await custody.sealer.open_from(key, link, "nonce_sealed")
        if kept is None:
            raise LinkNotFound(_NO_LINK)
        data = json.loads(kept)
        if "offered" in data:  # a two-step link awaiting its account choice (picking.py)
            raise LinkUsed("Choose your accounts on the page your bank sent you back to.")
        consent = data.pop("consent", None)
        data.update(state=state, nonce=nonce)
        created = CreatedConsent.from_dict(consent) if isinstance(consent, dict) else None
        return PendingAuthorization.from_dict(data), created

    async def _discard(
        self, manager: ConsentManager | None, created: CreatedConsent | None,
        link: LinkSession | None,
    ) -> None:
        # A consent the user never completed is deleted, not left to expire at the bank.
        if manager is None or created is None:
            return
        try:
            await manager.revoke(created.id)
        except ConnectorError as exc:
            log.warning("link %s: unused consent not deleted: %s",
                        link.id if link else "(starting)", exc.code)

    async def _fail(
        self, region: str, link: LinkSession, outcome: str, request_id: str | None, *,
        reason: str | None = None, bank_id: str | None = None,
    ) -> Outcome:
        """Mark the session failed, audited, and tell the app (``link.failed`` with
        ``reason``, a code; ``outcome`` when none is known)."""
        async with self.router.session(region) as session, session.begin():
            values: dict[str, object] = {"status": LinkStatus.FAILED}
            if bank_id is not None:
                values["bank_id"] = bank_id
            await session.execute(update(_links).where(_links.c.id == link.id).values(**values))
            row = await session.get(LinkSession, link.id, populate_existing=True)
            if row is not None:
                await link_failed(session, row, reason or outcome)
            await audit.record(
                session, actor=link.user_id, action=f"link_session.{outcome}",
                target_id=link.id, request_id=request_id,
            )
        target = link.update_connection_id
        return Outcome(app_redirect(link.redirect_uri, target, outcome), outcome, target)

    async def _after(
        self, connection_id: ConnectionId, bank_id: str, saved: SavedGrant,
        request_id: str | None, presence: UserPresence | None,
    ) -> None:
        # The link stands even if the first sync fails: the app sees the connection and
        # `sync_states.last_error`, and can sync again.
        try:
            # The user is here: PSD2 RTS Art. 36(5) budgets only unattended calls.
            await self.syncer.sync(connection_id, actor="gateway", request_id=request_id,
                                   budgeted=False, presence=presence)
        except (ConnectorError, GatewayError) as exc:
            log.warning("connection %s: first sync failed: %s", connection_id, exc.code)
        manager = self.banks.consents(bank_id)
        old_consent = saved.superseded_consent
        if manager is not None and old_consent and old_consent != saved.connection.consent_id:
            try:  # update mode: the re-consent replaced it (OBIE: DELETE the old consent)
                await manager.revoke(old_consent)
            except ConnectorError as exc:
                log.warning("connection %s: old consent not deleted: %s", connection_id,
                            exc.code)
        superseded = saved.superseded
        if superseded:
            try:
                await self.banks.oauth(bank_id).revoke(superseded, "refresh_token")
            except ConnectorError as exc:
                log.warning("connection %s: old grant not revoked: %s", connection_id, exc.code)


def _consent_only() -> TokenSet:
    """The "grant" of a bank whose own SCA page authorised the consent (Berlin Group
    redirect approach): no OAuth, so no token; the consent resource, read by
    :meth:`~connectors.ConsentManager.confirm` next, is the whole authority. The link's
    ``state`` (in the ``TPP-Redirect-URI`` the bank returned to) already named this
    session and browser; an empty access token makes the API calls carry no
    ``Authorization``, and a missing expiry keeps the refresh worker away."""
    return TokenSet(access_token="", refresh_token=None, expires_at=None, scope=None,
                    token_type="none")  # noqa: S106 - a type name; there is no token


def _network(client_ip: str | None) -> str | None:
    # An end user's address is personal data: the audit trail keeps its network only.
    if client_ip is None:
        return None
    try:
        return audit.anonymize_ip(client_ip)
    except ValueError:
        return None
