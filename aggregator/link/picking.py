"""The two-step consent: list the user's accounts, let them pick, consent to exactly those.

Berlin Group NextGenPSD2 (Implementation Guidelines v1.3.x, "Consent Request on Account
List of Available Accounts", then "Consent Request on Dedicated Accounts"): a bank whose
profile says ``access = "two_step"`` first gets a one-off consent on
``availableAccounts``. When the user returns from that authorisation,
:func:`offer_accounts` reads the account list under it, deletes it (its one use is
spent), and answers with a page of the accounts (names and masked IBANs). The user's
choice comes back to ``POST /link/accounts`` (:func:`choose_accounts`), which creates the
detailed consent on the chosen IBANs and sends the user to the bank again; that second
callback completes the link as any other.

Between the two, the session stays ``authorizing`` under a fresh ``state`` (only its
digest stored; the page's form carries it), and the offered IBANs are sealed in the
session row under the user's data key, as the PKCE verifier is. A choice outside the
offer, or a second post of the form, is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.ids import new_secret, secret_digest
from aggregator.link.errors import LinkFormInvalid, LinkUsed
from aggregator.link.outcome import ERROR, AccountChoice, Offered, Outcome
from aggregator.models import LinkSession, LinkStatus
from aggregator.models.base import table_of
from aggregator.sealing import Field
from connectors import (
    ConnectorError,
    CreatedConsent,
    PendingAuthorization,
    TokenSet,
    UserPresence,
)

if TYPE_CHECKING:
    from aggregator.link.flow import LinkFlow

log = logging.getLogger(__name__)

#: ``CreatedConsent.data["step"]`` of the first, list-only consent of a two-step link.
LIST_STEP = "list"
ACCOUNTS_PATH = "/link/accounts"
_links = table_of(LinkSession)
_MAX_OFFERED = 50


async def offer_accounts(
    flow: LinkFlow, region: str, link: LinkSession, pending: PendingAuthorization,
    created: CreatedConsent, tokens: TokenSet, client_ip: str | None,
    request_id: str | None,
) -> Outcome:
    """Read the accounts the list consent shows, forget that consent, offer them."""
    manager = flow.banks.consents(pending.bank_id)
    assert manager is not None  # only a consent standard produces a list step
    headers = manager.resource_headers(created.id, UserPresence(client_ip))
    try:
        listed = await flow.banks.dialect(pending.bank_id, tokens.access_token,
                                          headers=headers).accounts()
    except ConnectorError as exc:
        log.warning("link %s: account list failed: %s", link.id, exc.code)
        await flow._discard(manager, created, link)
        return await flow._fail(region, link, ERROR, request_id)
    await flow._discard(manager, created, link)  # one-off: its one use is spent
    offered = [(a.identifier, a.name, a.masked_identifier or "")
               for a in listed if a.identifier][:_MAX_OFFERED]
    state = new_secret("sta", region)
    custody = flow.custody[region]
    blob = json.dumps({"bank_id": pending.bank_id, "redirect_uri": pending.redirect_uri,
                       "offered": [iban for iban, _, _ in offered]})
    async with flow.router.session(region) as session, session.begin():
        key = await custody.data_keys.load(session, link.user_id)
        sealed = await custody.sealer.seal(
            key, Field("link_sessions", "pkce_verifier_sealed", link.id, link.user_id), blob,
            session=session)
        await session.execute(update(_links).where(_links.c.id == link.id).values(
            state_digest=secret_digest(state), pkce_verifier_sealed=sealed,
            nonce_sealed=None, used_at=None,
        ))
        await audit.record(session, actor=link.user_id, action="link_session.choosing",
                           target_id=link.id, request_id=request_id)
    choice = AccountChoice(state, [Offered(name, mask) for _, name, mask in offered])
    return Outcome("", "choose", None, choice)


async def choose_accounts(
    flow: LinkFlow, form: Mapping[str, list[str]], *, client_ip: str | None,
    request_id: str | None,
) -> str:
    """The user's pick: the detailed consent on those IBANs; returns the bank's URL."""
    state = (form.get("state") or [""])[0]
    region, link = await flow._find(state)
    await flow._claim(region, link)
    custody = flow.custody[region]
    kept = await _kept(flow, custody, link)
    offered: list[str] = kept["offered"]
    try:
        picked = sorted({int(i) for i in form.get("account", [])})
    except ValueError:
        picked = [-1]
    if not picked or any(not 0 <= i < len(offered) for i in picked):
        await _reopen(flow, region, link, state)
        raise LinkFormInvalid("Choose at least one of the accounts listed.")
    new_state = new_secret("sta", region)
    created, pending, url = await flow._start(
        kept["bank_id"], kept["redirect_uri"], new_state, client_ip,
        account_ids=tuple(offered[i] for i in picked))
    assert created is not None  # a two-step bank has a consent standard
    stored: dict[str, object] = dict(pending.to_dict())
    stored["consent"] = created.to_dict()
    nonce = stored.pop("nonce")
    del stored["state"]
    async with flow.router.session(region) as session, session.begin():
        key = await custody.data_keys.load(session, link.user_id)

        async def seal(column: str, value: str) -> bytes:
            place = Field("link_sessions", column, link.id, link.user_id)
            return await custody.sealer.seal(key, place, value, session=session)

        await session.execute(update(_links).where(_links.c.id == link.id).values(
            state_digest=secret_digest(pending.state),
            pkce_verifier_sealed=await seal("pkce_verifier_sealed", json.dumps(stored)),
            nonce_sealed=await seal("nonce_sealed", nonce) if isinstance(nonce, str) else None,
            used_at=None,
        ))
        await audit.record(session, actor=link.user_id, action="link_session.authorizing",
                           target_id=link.id, request_id=request_id)
    return url


async def _kept(flow: LinkFlow, custody: RegionCustody, link: LinkSession
                ) -> dict[str, Any]:
    async with flow.router.reader(custody.region) as session:
        key = await custody.data_keys.load(session, link.user_id)
    raw = await custody.sealer.open_from(key, link, "pkce_verifier_sealed")
    data = json.loads(raw) if raw else None
    if not isinstance(data, dict) or "offered" not in data:
        raise LinkUsed("These accounts were already chosen.")
    return data


async def _reopen(flow: LinkFlow, region: str, link: LinkSession, state: str) -> None:
    # An empty or foreign choice: the same page may be submitted again.
    async with flow.router.session(region) as session, session.begin():
        await session.execute(update(_links).where(
            _links.c.id == link.id, _links.c.status == LinkStatus.AUTHORIZING,
        ).values(used_at=None, state_digest=secret_digest(state)))
