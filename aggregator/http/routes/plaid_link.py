"""``POST /v1/plaid/exchange``: finish a Plaid link session with the frontend's public token.

The app's backend calls it (API key) after Plaid Link's ``onSuccess`` in its frontend;
:mod:`aggregator.plaid.link` does the work. The public token is a short-lived bearer
secret: it travels only in this body, never in a URL or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.routing import BaseRoute

from aggregator.http.problems import Conflict, FieldError, NotFound, ValidationFailed
from aggregator.http.routes.owned import connection_view, owned_connection
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.schema import rules
from aggregator.http.views import ID, ConnectionOut
from aggregator.link.wiring import components
from aggregator.plaid.link import (
    PlaidLinkConflict,
    PlaidLinkNotFound,
    PublicTokenMissing,
    exchange,
)
from vault import Secret


@dataclass(frozen=True)
class PlaidExchange:
    """The link session Plaid Link ran for, and the public token its ``onSuccess`` gave."""

    link_session_id: str = field(metadata=rules(
        pattern=ID, description="`link_session_id` from `POST /v1/link/sessions`."))
    public_token: str | None = field(default=None, metadata=rules(
        min_length=1, max_length=512,
        description="Plaid Link's `public_token`; required for a new link, ignored in "
                    "update mode (the Item keeps its access token)."))


async def post_exchange(call: Call) -> ConnectionOut:
    """Exchange the public token and create the connection (update mode: repair it).

    The connection's ``connection.created`` (or ``connection.reauthorized``) event is
    committed with it; a used, expired or foreign session is refused and changes nothing.
    """
    body = call.body_as(PlaidExchange)
    services = call.services
    parts = components(services)
    try:
        done = await exchange(
            services.router, services.custody, parts.banks, parts.syncer, caller=call.caller,
            link_session_id=body.link_session_id,
            public_token=Secret(body.public_token) if body.public_token else None,
            request_id=call.request_id,
        )
    except PlaidLinkNotFound as exc:
        raise NotFound(str(exc)) from None
    except PlaidLinkConflict as exc:
        raise Conflict(str(exc)) from None
    except PublicTokenMissing as exc:
        raise ValidationFailed([FieldError(str(exc), pointer="#/public_token")]) from None
    region = services.router.region_of(done.connection_id)
    async with services.router.reader(region) as session:
        return connection_view(await owned_connection(session, done.connection_id, call.caller))


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/v1/plaid/exchange", post_exchange, "POST", Operation(
            summary="Finish a Plaid link session with Plaid Link's public token",
            description=post_exchange.__doc__, body=PlaidExchange, response=ConnectionOut,
            errors=(404, 409, 422, 502, 503), tags=("link",),
        )),
    ]
