"""Link sessions: created by an app's backend, opened once by its user's browser.

A link token (``lnk_{region}_{52 base32}``, 256 bits, :func:`aggregator.ids.new_secret`)
is a bearer secret that does one thing: open the Link page of one session within ten
minutes. Only its SHA-256 is stored; it carries its region so the page is served from
the user's home region without a global lookup. Picking a bank spends it.

The page's form carries a per-session nonce besides the token in the path: a keyed hash
of the session id under the region's pepper, so it needs no storage and cannot be
computed from the database alone.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.branding import Brand
from aggregator.custody import RegionCustody
from aggregator.errors import InvalidId
from aggregator.ids import (
    ApplicationId,
    ConnectionId,
    LinkSessionId,
    new_id,
    new_secret,
    parse_id,
    parse_secret,
    secret_digest,
)
from aggregator.link.errors import (
    LinkExpired,
    LinkFormInvalid,
    LinkNotFound,
    LinkRequestInvalid,
    LinkUsed,
)
from aggregator.models import (
    Application,
    Connection,
    ConnectionStatus,
    LinkSession,
    LinkStatus,
    User,
)
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory, UnknownBank
from connectors import BankProfile

#: docs/architecture.md, "Linking": a link session lives ten minutes.
LINK_TTL = timedelta(minutes=10)
_UNKNOWN = "We could not find this link: it may be incomplete, or was withdrawn."
TOKEN_KIND = "lnk"  # noqa: S105 - the kind tag of link tokens, not a secret


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """What an app asks for; ``connection_id`` selects update mode (re-consent)."""

    application_id: ApplicationId
    user_id: str
    redirect_uri: str
    bank_id: str | None = None
    connection_id: str | None = None
    #: The Link page's language (a BCP 47 tag the page speaks, e.g. ``de``); None: the
    #: browser's ``Accept-Language``.
    locale: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class IssuedLink:
    """A new session and the token that opens it; the token is shown once."""

    session_id: LinkSessionId
    token: str
    expires_at: datetime
    #: The bank chosen up front (or the update target's): "plaid" continues in Plaid Link.
    bank_id: str | None = None
    update_connection_id: ConnectionId | None = None

    def __repr__(self) -> str:
        return f"IssuedLink(session_id={self.session_id!r}, token='***')"


async def create_link_session(
    router: RegionRouter,
    banks: BankDirectory,
    request: LinkRequest,
    *,
    request_id: str | None = None,
    client_ip: str | None = None,
) -> IssuedLink:
    """Validate ``request`` against the app, the user and the banks, then store a session.

    Raises :class:`LinkNotFound` for a user the app does not have, and
    :class:`LinkRequestInvalid` (naming the field) for everything else.
    """
    region = _user_region(router, request.user_id)
    async with router.session(region) as session, session.begin():
        app = await session.get(Application, request.application_id)
        user = await session.get(User, request.user_id)
        if user is None or app is None or user.application_id != app.id:
            raise LinkNotFound("no such user for this application")
        if user.erasing_since is not None:  # erasure requested: no new grants (issue 8)
            raise LinkNotFound("no such user for this application")
        if request.redirect_uri not in (app.redirect_uris or []):
            raise LinkRequestInvalid(
                "#/redirect_uri", "not in the application's redirect URI allow-list"
            )
        bank_id = request.bank_id
        update_id: ConnectionId | None = None
        if request.connection_id is not None:
            target = await _update_target(session, request, region)
            if bank_id is not None and bank_id != target.bank_id:
                raise LinkRequestInvalid("#/bank_id", "differs from the connection's bank")
            bank_id, update_id = target.bank_id, target.id
        if bank_id is not None:
            _offered(banks, bank_id, region, "#/bank_id")
        token = new_secret(TOKEN_KIND, region)
        now = utcnow()
        link = LinkSession(
            id=new_id("lnk", region), user_id=user.id, application_id=app.id,
            token_digest=secret_digest(token), bank_id=bank_id,
            redirect_uri=request.redirect_uri, status=LinkStatus.PENDING,
            update_connection_id=update_id, created_at=now, expires_at=now + LINK_TTL,
            locale=request.locale,
        )
        session.add(link)
        await session.flush()
        await audit.record(
            session, actor=app.id, action="link_session.created", target_id=link.id,
            request_id=request_id, client_ip=client_ip,
        )
    return IssuedLink(link.id, token, link.expires_at, bank_id, update_id)


def _user_region(router: RegionRouter, user_id: str) -> str:
    try:
        region = parse_id(user_id, kind="usr", regions=router.regions).region
    except InvalidId:
        raise LinkNotFound("no such user for this application") from None
    assert region is not None  # user ids are regional
    return region


async def _update_target(
    session: AsyncSession, request: LinkRequest, region: str
) -> Connection:
    assert request.connection_id is not None
    try:
        found = parse_id(request.connection_id, kind="con").region
    except InvalidId:
        found = None
    target = await session.get(Connection, request.connection_id) if found == region else None
    if (
        target is None or target.user_id != request.user_id
        or target.application_id != request.application_id
    ):
        raise LinkRequestInvalid("#/connection_id", "no such connection for this user")
    if target.status is ConnectionStatus.REVOKED:
        raise LinkRequestInvalid("#/connection_id", "the connection was revoked; link anew")
    return target


def _offered(banks: BankDirectory, bank_id: str, region: str, pointer: str
             ) -> BankProfile | None:
    if banks.is_plaid(bank_id):  # Plaid Link runs in the app's frontend, not our page
        if region not in banks.plaid_regions():
            raise LinkRequestInvalid(pointer, "Plaid is not offered in the user's region")
        return None
    try:
        return banks.profile(bank_id, region=region)
    except UnknownBank:
        raise LinkRequestInvalid(pointer, "no such bank in the user's region") from None


@dataclass(frozen=True, slots=True)
class OpenedLink:
    """A session found by its token, still usable, with what the page may offer."""

    session: LinkSession
    region: str
    banks: Sequence[BankProfile]
    form_nonce: str
    app_name: str
    brand: Brand | None = None


async def open_link(
    router: RegionRouter, custody: Mapping[str, RegionCustody], banks: BankDirectory,
    token: str,
) -> OpenedLink:
    """The pending session ``token`` opens; typed refusals for anything else."""
    try:
        region = parse_secret(token, kind=TOKEN_KIND, regions=router.regions)
    except InvalidId:
        raise LinkNotFound(_UNKNOWN) from None
    async with router.reader(region) as session:
        found = (await session.execute(
            select(LinkSession, Application.name, Application.brand_name,
                   Application.brand_logo, Application.brand_accent)
            .join(Application, Application.id == LinkSession.application_id)
            .where(LinkSession.token_digest == secret_digest(token))
        )).one_or_none()
    if found is None:
        raise LinkNotFound(_UNKNOWN)
    link, app_name, brand_name, brand_logo, brand_accent = found
    brand = (Brand(brand_name or app_name, brand_logo, brand_accent)
             if brand_name or brand_logo or brand_accent else None)
    if link.bank_id is not None and banks.is_plaid(link.bank_id):
        raise LinkNotFound("This link continues in the app, through Plaid Link.")
    check_pending(link)
    keys = custody[region]
    offered = (
        [banks.profile(link.bank_id, region=region)] if link.bank_id
        else banks.in_region(region)
    )
    return OpenedLink(link, region, offered, form_nonce(keys, link.id), app_name, brand)


def check_pending(link: LinkSession) -> None:
    if link.status is not LinkStatus.PENDING:
        raise LinkUsed("A bank was already chosen with this link.")
    if utcnow() >= link.expires_at:
        raise LinkExpired("This link expired before a bank was chosen.")


def form_nonce(custody: RegionCustody, session_id: str) -> str:
    return custody.hasher.digest("link_form_nonce", session_id).hex()


def check_form(
    opened: OpenedLink, custody: RegionCustody, nonce: str, bank_id: str | None
) -> str:
    """The bank chosen on a genuine form of this session; else :class:`LinkFormInvalid`.
    ``bank_id=None`` checks only that the form is genuine (the cancel button)."""
    expected = form_nonce(custody, opened.session.id)
    if not hmac.compare_digest(expected.encode(), nonce.encode()):
        raise LinkFormInvalid("The form was incomplete or had expired.")
    if bank_id is None:
        return ""
    if bank_id not in {p.id for p in opened.banks}:
        raise LinkFormInvalid("Please choose one of the banks listed.")
    return bank_id


