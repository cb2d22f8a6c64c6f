""""Cancel and return to the app": the user leaves the picker without choosing a bank.

The session is closed (``failed``, so its token opens nothing again), the app is told
(``link.failed`` with reason ``cancelled``), the step is audited, and the browser goes to
the app's redirect URI with ``outcome=cancelled`` (and ``connection_id`` in update mode,
as every outcome carries it). Only a pending session can be cancelled, by the browser
it is bound to, with the page's form nonce; the update is conditional on ``pending``, so
a cancel racing a bank choice loses cleanly to it.
"""

from __future__ import annotations

import hmac

from sqlalchemy import update

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.link.errors import LinkFormInvalid, LinkUsed
from aggregator.link.flow import app_redirect
from aggregator.link.misconfiguration import link_failed
from aggregator.link.sessions import OpenedLink, form_nonce
from aggregator.models import LinkSession, LinkStatus
from aggregator.models.base import table_of
from aggregator.store import RegionRouter

CANCELLED = "cancelled"
_links = table_of(LinkSession)


async def cancel_link(
    router: RegionRouter, custody: RegionCustody, opened: OpenedLink, nonce: str, *,
    request_id: str | None, client_ip: str | None,
) -> str:
    """Close ``opened``'s session as cancelled; returns the app's redirect URI."""
    link = opened.session
    if not hmac.compare_digest(form_nonce(custody, link.id).encode(), nonce.encode()):
        raise LinkFormInvalid("The form was incomplete or had expired.")
    async with router.session(opened.region) as session, session.begin():
        moved = await session.execute(update(_links).where(
            _links.c.id == link.id, _links.c.status == LinkStatus.PENDING,
        ).values(status=LinkStatus.FAILED))
        if getattr(moved, "rowcount", 0) != 1:
            raise LinkUsed("A bank was already chosen with this link.")
        row = await session.get(LinkSession, link.id, populate_existing=True)
        if row is not None:
            await link_failed(session, row, CANCELLED)
        await audit.record(session, actor=link.user_id, action="link_session.cancelled",
                           target_id=link.id, request_id=request_id, client_ip=client_ip)
    return app_redirect(link.redirect_uri, link.update_connection_id, CANCELLED)
