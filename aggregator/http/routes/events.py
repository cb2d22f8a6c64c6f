"""``/v1/webhook-endpoint`` and ``/v1/events``: where events go, and reading them back.

``PUT /v1/webhook-endpoint`` sets the URL (and makes the first signing secret);
``POST /v1/webhook-endpoint/rotate`` makes a new secret while the previous one keeps
signing for a day. Either shows a new secret in its answer only: store it then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from starlette.routing import BaseRoute

from aggregator.events import EVENT_TYPES, UnsafeUrl, configure
from aggregator.events.replay import list_events, redeliver
from aggregator.http.cursors import decode_cursor, encode_cursor
from aggregator.http.problems import FieldError, InvalidCursor, NotFound, ValidationFailed
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.schema import rules
from aggregator.models import OutboundEvent

EVENT_ID = {"id": "An event id (`msg_<region>_…`)."}


@dataclass(frozen=True)
class EndpointIn:
    url: str = field(metadata=rules(
        min_length=8, max_length=2048, example="https://api.example.com/webhooks",
        description="https; private, loopback, link-local and reserved targets, in any "
                    "spelling or by DNS answer, are refused.",
    ))


@dataclass(frozen=True)
class EndpointOut:
    """The endpoint; ``secret`` is present only in the answer that made it."""

    url: str | None
    secret: str | None = field(default=None, metadata=rules(
        description="`whsec_…` (Standard Webhooks); shown once."))
    previous_secret_expires_at: datetime | None = None


@dataclass(frozen=True)
class EventsQuery:
    since: str | None = field(default=None, metadata=rules(
        max_length=40, description="ISO 8601 instant: events created at or after it."))
    cursor: str | None = field(default=None, metadata=rules(max_length=512))
    limit: int = field(default=100, metadata=rules(minimum=1, maximum=500))


@dataclass(frozen=True)
class EventData:
    """What an event says: ids, codes and counts (the keys :func:`check_data` allows)."""

    connection_id: str | None = None
    user_id: str | None = None
    erasure_request_id: str | None = None
    link_session_id: str | None = None
    bank_id: str | None = None
    status: str | None = None
    reason: str | None = None
    accounts: int | None = None
    added: int | None = None
    modified: int | None = None
    removed: int | None = None
    consent_expires_at: str | None = None


# -- each event type's payload (docs/api.md, "Events"); published in OpenAPI --------------

_CON = rules(description="The connection (`con_<region>_…`).")
_USR = rules(description="The user (`usr_<region>_…`).")
_BANK = rules(description="The bank profile's id.")
_STATUS = rules(description="The connection's status after the change.")


@dataclass(frozen=True)
class ConnectionCreatedEventData:
    """``connection.created`` and ``connection.reauthorized``."""

    connection_id: str = field(metadata=_CON)
    user_id: str = field(metadata=_USR)
    bank_id: str = field(metadata=_BANK)
    status: str = field(metadata=_STATUS)


@dataclass(frozen=True)
class ConnectionReauthRequiredEventData:
    """``connection.reauth_required``: the user must link again (update mode)."""

    connection_id: str = field(metadata=_CON)
    user_id: str = field(metadata=_USR)
    bank_id: str = field(metadata=_BANK)
    status: str = field(metadata=_STATUS)
    reason: str = field(metadata=rules(description="Why, e.g. `invalid_grant`, "
                                                   "`consent_expired`."))


@dataclass(frozen=True)
class ConnectionConsentExpiringEventData:
    """``connection.consent_expiring``: sent once per consent period, ahead of its end."""

    connection_id: str = field(metadata=_CON)
    user_id: str = field(metadata=_USR)
    bank_id: str = field(metadata=_BANK)
    status: str = field(metadata=_STATUS)
    consent_expires_at: str = field(metadata=rules(description="ISO 8601 instant."))


@dataclass(frozen=True)
class SyncCompletedEventData:
    """``sync.completed``: counts of what changed; read the data through the API."""

    connection_id: str = field(metadata=_CON)
    user_id: str = field(metadata=_USR)
    accounts: int
    added: int
    modified: int
    removed: int


@dataclass(frozen=True)
class SyncPartialEventData:
    """``sync.partial``: what was read is committed; some resources were refused or not
    offered (``GET /v1/connections/{connection_id}/syncs`` lists which)."""

    connection_id: str = field(metadata=_CON)
    user_id: str = field(metadata=_USR)
    reason: str = field(metadata=rules(description="The first resource error's code, e.g. "
                                                   "`not_permitted`, `not_offered`."))
    accounts: int
    added: int
    modified: int
    removed: int


@dataclass(frozen=True)
class SyncFailedEventData:
    """``sync.failed``: nothing was committed; a scheduled sync is retried with backoff."""

    connection_id: str = field(metadata=_CON)
    user_id: str = field(metadata=_USR)
    reason: str = field(metadata=rules(description="The error code, e.g. `bank_unavailable`."))


@dataclass(frozen=True)
class LinkFailedEventData:
    """``link.failed``: the bank refused the gateway's own configuration (not the user's
    answer): the operator must fix the bank profile named by ``bank_id``."""

    link_session_id: str = field(metadata=rules(description="The link session (`lnk_<region>_…`)."))
    user_id: str = field(metadata=_USR)
    bank_id: str = field(metadata=_BANK)
    reason: str = field(metadata=rules(description="A code naming the setting, e.g. "
                                                   "`invalid_client`, `par_required`."))


@dataclass(frozen=True)
class LinkCancelledEventData:
    """``link.cancelled``: the person chose "Cancel and return to the app" on the Link
    page before choosing a bank (Plaid Link's ``onExit`` without an error); the browser
    returns to the app with ``outcome=cancelled``. Nothing failed: no alert is due."""

    link_session_id: str = field(metadata=rules(description="The link session (`lnk_<region>_…`)."))
    user_id: str = field(metadata=_USR)


@dataclass(frozen=True)
class UserErasedEventData:
    """``user.erased``: the erasure request completed; its receipt is at
    ``GET /v1/erasure-requests/{erasure_request_id}``."""

    user_id: str = field(metadata=_USR)
    erasure_request_id: str = field(metadata=rules(description="`era_<region>_…`."))
    status: str = field(metadata=rules(description="`completed`."))


#: Each event type's payload schema (the ``data`` of an event of that type).
EVENT_PAYLOADS: Mapping[str, type[Any]] = {
    "connection.created": ConnectionCreatedEventData,
    "connection.reauthorized": ConnectionCreatedEventData,
    "connection.reauth_required": ConnectionReauthRequiredEventData,
    "connection.consent_expiring": ConnectionConsentExpiringEventData,
    "sync.completed": SyncCompletedEventData,
    "sync.partial": SyncPartialEventData,
    "sync.failed": SyncFailedEventData,
    "link.cancelled": LinkCancelledEventData,
    "link.failed": LinkFailedEventData,
    "user.erased": UserErasedEventData,
}
_PAYLOAD_DOC = "; ".join(f"`{t}`: `{c.__name__}`" for t, c in EVENT_PAYLOADS.items())


@dataclass(frozen=True)
class EventOut:
    id: str
    type: str = field(metadata=rules(
        description="One of " + ", ".join(f"`{t}`" for t in sorted(EVENT_TYPES)) + ". "
                    "`sync.completed`: every resource the bank offers was read; "
                    "`sync.partial`: the account list was read and committed with what "
                    "else was, some resource was refused (`reason` `not_permitted`) or "
                    "missing (`not_offered`); `sync.failed`: nothing was committed, "
                    "`reason` is the error code. `GET /v1/connections/{id}/syncs` has "
                    "the details of each run. `link.failed`: a link session ended without "
                    "a connection; `reason` is `access_denied` (the user), a bank "
                    "misconfiguration (`invalid_client`, `unauthorized_client`, "
                    "`invalid_scope`, `redirect_uri_mismatch`, `par_required`: only the "
                    "operator can fix it) or another error code. `link.cancelled`: the "
                    "person left the Link page with its cancel button before choosing a "
                    "bank."))
    created_at: datetime
    data: EventData = field(metadata=rules(
        description="The payload; its fields depend on `type` (see the schema of each): "
                    + _PAYLOAD_DOC + "."))
    delivery: str = field(metadata=rules(
        description="`pending` (will be tried), `delivered`, `failed` (retries exhausted) "
                    "or `no_endpoint` (no endpoint was set when it was due; set one and "
                    "redeliver)."))
    attempts: int
    last_status: int | None
    delivered_at: datetime | None


@dataclass(frozen=True)
class EventPage:
    data: list[EventOut]
    next_cursor: str | None


def event_view(event: OutboundEvent) -> EventOut:
    delivery = ("pending" if event.next_attempt_at is not None
                else "delivered" if event.delivered_at is not None
                else "no_endpoint" if event.last_error == "no_endpoint" else "failed")
    return EventOut(event.id, event.type, event.created_at, _data(event.data), delivery,
                    event.attempts, event.last_status, event.delivered_at)


def _data(data: Mapping[str, Any]) -> EventData:
    known = {f.name for f in fields(EventData)}
    return EventData(**{k: v for k, v in data.items() if k in known})


async def _configure(call: Call, *, url: str | None, rotate: bool) -> EndpointOut:
    try:
        change = await configure(call.services.router, call.services.custody, call.caller,
                                 url=url, rotate=rotate, policy=call.services.settings.egress)
    except UnsafeUrl as exc:
        raise ValidationFailed([FieldError(str(exc), pointer="#/url")]) from None
    if change is None:
        raise NotFound("the application is not present in every region")
    return EndpointOut(change.url, change.secret, change.previous_expires_at)


async def put_endpoint(call: Call) -> EndpointOut:
    return await _configure(call, url=call.body_as(EndpointIn).url, rotate=False)


async def rotate_secret(call: Call) -> EndpointOut:
    return await _configure(call, url=None, rotate=True)


async def get_events(call: Call) -> EventPage:
    """The calling application's events, oldest first, from every region."""
    query = call.query_as(EventsQuery)
    since = _instant(query.since, "since") if query.since else None
    after = None
    if query.cursor:
        at, last = decode_cursor(query.cursor, call.caller, 2)
        after = (_instant(at, "cursor"), last)
    events, more = await list_events(call.services.router, call.caller, since=since,
                                     after=after, limit=query.limit)
    cursor = None
    if more and events:
        cursor = encode_cursor(call.caller, events[-1].created_at.isoformat(), events[-1].id)
    return EventPage([event_view(e) for e in events], cursor)


def _instant(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.utcoffset() is None:
        if name == "cursor":
            raise InvalidCursor("the cursor does not decode")
        raise ValidationFailed([FieldError("must be an ISO 8601 instant with an offset",
                                           parameter=name)])
    return value


async def post_redeliver(call: Call) -> EventOut:
    event_id, region = call.path_id("id", "msg")
    event = await redeliver(call.services.router, region, call.caller, event_id)
    if event is None:
        raise NotFound("no event with this id")
    return event_view(event)


def routes() -> list[BaseRoute]:
    tags = ("events",)
    return [
        ApiRoute("/v1/webhook-endpoint", put_endpoint, "PUT", Operation(
            description=(
                "Sets the HTTPS endpoint that receives the application's events, in every "
                "region, signed as the Standard Webhooks specification describes. The "
                "answer that first sets it carries the signing secret (`whsec_…`), once: "
                "keep it to verify signatures."
            ),
            summary="Set where outbound events are delivered", body=EndpointIn,
            response=EndpointOut, tags=tags, errors=(422,),
        )),
        ApiRoute("/v1/webhook-endpoint/rotate", rotate_secret, "POST", Operation(
            description=(
                "Issues a new signing secret, returned once. For 24 hours every event "
                "carries signatures under both secrets, so receivers can switch without "
                "missing one."
            ),
            summary="Rotate the signing secret; the previous one signs for 24 hours more",
            response=EndpointOut, tags=tags,
        )),
        ApiRoute("/v1/events", get_events, "GET", Operation(
            summary="List the application's events", description=get_events.__doc__,
            query=EventsQuery, response=EventPage, tags=tags, errors=(422,),
            documents=tuple(dict.fromkeys(EVENT_PAYLOADS.values())),
        )),
        ApiRoute("/v1/events/{id}/redeliver", post_redeliver, "POST", Operation(
            description=(
                "Makes the event due now with its attempt count reset; a worker delivers "
                "it shortly, signed anew. Use it after fixing an endpoint that failed."
            ),
            summary="Deliver an event again, with a fresh retry schedule",
            response=EventOut, status=202, tags=tags, path_params=EVENT_ID,
        )),
    ]
