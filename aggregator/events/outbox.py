"""Writing outbound events: :func:`emit`, in the transaction of the change it describes.

An event is a row of ``outbound_events`` (:class:`~aggregator.models.OutboundEvent`);
the caller's session inserts it next to the change, so both commit or neither does (the
transactional outbox). Delivery happens later, from the row
(:mod:`aggregator.events.delivery`).

Payloads are ids, codes and counts, never a token, a name, an IBAN or an application's
own user id: the receiver fetches anything else through the API, which checks its key.
:func:`check_data` enforces it by an allow-list of keys, each with the shape its value
must have, so a careless ``data={"access_token": …}`` fails loudly in tests instead of
leaking to a third party's logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.errors import EventPayloadRejected, InvalidId
from aggregator.ids import ApplicationId, OutboundEventId, UserId, new_id, parse_id
from aggregator.models import OutboundEvent
from aggregator.models.base import utcnow
from aggregator.store.residency import REGION_KEY

#: The event types applications can receive.
EVENT_TYPES = frozenset({
    "connection.created",
    "connection.reauth_required",
    "connection.consent_expiring",
    "connection.reauthorized",
    "link.cancelled",
    "link.failed",
    "sync.completed",
    "sync.partial",
    "sync.failed",
    "user.erased",
})

_CODE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def _id_of(kind: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        try:
            parse_id(value, kind=kind)
        except InvalidId:
            return False
        return True

    return check


def _code(value: Any) -> bool:
    return isinstance(value, str) and _CODE.fullmatch(value) is not None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _instant(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 40:
        return False
    try:
        return datetime.fromisoformat(value).utcoffset() is not None
    except ValueError:
        return False


#: Every key a payload may hold, and what its value must look like.
FIELDS: Mapping[str, Callable[[Any], bool]] = {
    "connection_id": _id_of("con"),
    "user_id": _id_of("usr"),
    "erasure_request_id": _id_of("era"),
    "link_session_id": _id_of("lnk"),
    "bank_id": _code,
    "status": _code,
    "reason": _code,
    "accounts": _count,
    "added": _count,
    "modified": _count,
    "removed": _count,
    "consent_expires_at": _instant,
}


def check_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as a plain dict if it holds only allowed ids, codes, counts and instants.

    The message names the offending key, never its value (which may be the secret).
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        check = FIELDS.get(key)
        if check is None:
            raise EventPayloadRejected(f"event data may not hold {key[:40]!r}")
        if value is not None and not check(value):
            raise EventPayloadRejected(f"event data {key!r} is not an id, code or count")
        out[key] = value
    return out


async def emit(
    session: AsyncSession, application_id: ApplicationId, type: str,
    data: Mapping[str, Any], *, now: datetime | None = None,
) -> OutboundEventId:
    """Add an event to the caller's transaction; returns its id. The caller commits.

    Example::

        async with router.session(region) as session, session.begin():
            connection.status = ConnectionStatus.REAUTH_REQUIRED
            await emit(session, connection.application_id, "connection.reauth_required",
                       {"connection_id": connection.id, "user_id": connection.user_id})
    """
    if type not in EVENT_TYPES:
        raise EventPayloadRejected(f"unknown event type {type[:64]!r}")
    checked = check_data(data)
    region = session.info.get(REGION_KEY)
    if not isinstance(region, str):
        raise RuntimeError("emit needs a session of RegionRouter.session()")  # a wiring bug
    event_id = new_id("msg", region)
    created = now or utcnow()
    # ``user.erased`` names a user whose row is gone: payload only, no reference to users.
    user = checked.get("user_id") if type != "user.erased" else None
    session.add(OutboundEvent(
        id=event_id, application_id=application_id, type=type, data=checked,
        user_id=UserId(user) if isinstance(user, str) else None,
        created_at=created, attempts=0, next_attempt_at=created,
    ))
    return event_id
