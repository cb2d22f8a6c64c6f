"""The sync path's side of the consent seam (connectors/consents).

Before the bank is read: the consent's headers for this call (``x-fapi-*`` for UK Open
Banking, ``Consent-ID``/``PSU-IP-Address`` for Berlin Group), user-present or not.
After a refusal: whether the consent itself is dead. A bank answers 401/403 both when a
consent was revoked and when it merely does not cover a resource, so the consent's
status decides (OBIE Account and Transaction API v3.1, "Consent Revocation": a revoked
consent's resources answer 403). A dead consent becomes :class:`~connectors.ConsentInvalid`,
a :class:`~connectors.GrantRevoked`, and the connection ``reauth_required`` with its
one event; anything else is re-raised as it was.
"""

from __future__ import annotations

import logging

from aggregator.models import Connection
from aggregator.reauth import require_reauth
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory
from connectors import (
    BankProtocolError,
    ConnectorError,
    ConsentInvalid,
    UserPresence,
)

log = logging.getLogger(__name__)


def resource_headers(
    banks: BankDirectory, connection: Connection, presence: UserPresence | None
) -> dict[str, str]:
    """The consent's headers for a call on ``connection``; none for plain OAuth2 banks."""
    manager = banks.consents(connection.bank_id)
    if manager is None or connection.consent_id is None:
        return {}
    # x-fapi-auth-date: when the user last authenticated for this connection, unless the
    # app told us a later moment with the call.
    auth_date = presence.auth_date if presence and presence.auth_date else (
        connection.consent_granted_at)
    ip = presence.ip_address if presence else None
    return manager.resource_headers(connection.consent_id, UserPresence(ip, auth_date))


async def explain_refusal(
    banks: BankDirectory, connection: Connection, exc: ConnectorError
) -> ConnectorError:
    """``ConsentInvalid`` when the refusal ``exc`` comes from a dead consent, else ``exc``."""
    manager = banks.consents(connection.bank_id)
    if manager is None or connection.consent_id is None or isinstance(exc, ConsentInvalid):
        return exc
    if not isinstance(exc, BankProtocolError):
        return exc
    try:
        state = await manager.status(connection.consent_id)
    except ConsentInvalid as dead:
        return dead
    except ConnectorError as other:
        log.warning("connection %s: consent status unknown: %s", connection.id, other.code)
        return exc
    if state.dead:
        return ConsentInvalid(f"{connection.bank_id}: the consent is {state.value}",
                              state.value)
    return exc


async def consent_dead(
    router: RegionRouter, region: str, connection: Connection, exc: ConsentInvalid,
    *, actor: str,
) -> None:
    """``reauth_required`` with reason ``consent_<state>`` and exactly one event, through
    :func:`aggregator.reauth.require_reauth` (a compare-and-set from ``active``: a second
    sync that finds the same dead consent changes nothing and sends nothing)."""
    async with router.session(region) as session, session.begin():
        await require_reauth(session, connection.id, reason=f"consent_{exc.state}"[:64],
                             actor=actor)
