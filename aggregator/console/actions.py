"""The console's actions (``POST`` forms), each in the audit trail of the region it acts on.

Every action is recorded with the operator's id as the actor (``opr_…``) and answered
with a redirect back to the page it came from (``303``, so a reload does not repeat
it), carrying a fixed outcome code the page turns into a sentence; nothing an operator
typed is echoed back through a URL.
"""

from __future__ import annotations

from urllib.parse import urlencode

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from aggregator import audit
from aggregator.applications import disable_application, revoke_key
from aggregator.console.needs import ConsoleNeeds
from aggregator.console.pages import sync_policy
from aggregator.console.web import HEADERS, client_ip, message, needs, render, request_id
from aggregator.erasure import ErasureConfig, request_erasure, retry_failed
from aggregator.errors import GatewayError, InvalidId
from aggregator.events.replay import redeliver
from aggregator.ids import ApplicationId, ConnectionId, parse_id
from aggregator.models import Connection, ConnectionStatus, OutboundEvent, User
from aggregator.operators import SignedIn
from aggregator.store.outage import REGION_DOWN
from aggregator.sync import BankDirectory, BudgetExhausted, BudgetMetrics, spend_for_sync
from connectors import ConnectorError


def back(path: str, done: str, **extra: str) -> Response:
    query = urlencode({"done": done, **extra})
    return RedirectResponse(f"{path}?{query}", status_code=303, headers=HEADERS)


def _id(text: object, kind: str, services: ConsoleNeeds) -> tuple[str, str] | None:
    if not isinstance(text, str):
        return None
    try:
        region = parse_id(text, kind=kind, regions=services.router.regions).region
    except InvalidId:
        return None
    return (text, region) if region else None


async def _record(services: ConsoleNeeds, region: str, who: SignedIn, action: str,
                  target: str, request: Request) -> None:
    async with services.router.session(region) as session, session.begin():
        await audit.record(session, actor=who.operator_id, action=action, target_id=target,
                           request_id=request_id(request), client_ip=client_ip(request))


async def trigger_sync(request: Request, who: SignedIn) -> Response:
    """Sync a connection now, spending its budget like an on-demand sync by the app."""
    services = needs(request)
    found = _id(request.path_params["id"], "con", services)
    if found is None:
        return message(request, "No such connection", "That is not a connection id.",
                       status=404)
    connection_id, region = found
    page = f"/console/connections/{connection_id}"
    try:
        async with services.router.reader(region) as session:
            connection = await session.get(Connection, connection_id)
        if connection is None:
            return message(request, "No such connection", "Nothing to sync.", status=404)
        if connection.status is not ConnectionStatus.ACTIVE:
            return message(request, "Cannot sync",
                           f"The connection is {connection.status.value}; only active "
                           "connections sync.", status=409)
        if services.sync is None:
            return message(request, "Cannot sync",
                           "This deployment has no sync job configured.", status=501)
        await _record(services, region, who, "operator.sync_requested", connection_id,
                      request)
        banks = services.banks
        item_level = isinstance(banks, BankDirectory) and banks.is_plaid(connection.bank_id)
        registry = getattr(getattr(request.app.state, "metrics", None), "registry", None)
        spent_at = await spend_for_sync(
            services.router, ConnectionId(connection_id),
            sync_policy(banks, connection.bank_id, region), reason="on_demand",
            accounts=() if item_level else None,
            metrics=BudgetMetrics.of(registry) if registry is not None else None,
        )
        await services.sync(ConnectionId(connection_id), request_id=request_id(request),
                            actor=who.operator_id, spent_at=spent_at)
    except BudgetExhausted as exc:
        return message(request, "Sync budget spent",
                       f"The bank allows the next sync at "
                       f"{exc.next_allowed_at:%Y-%m-%d %H:%M} UTC.", status=429)
    except REGION_DOWN:
        return message(request, "Region unavailable",
                       f"The database of region {region} does not answer.", status=503)
    except (ConnectorError, GatewayError) as exc:
        code = getattr(exc, "code", type(exc).__name__)
        return message(request, "The sync failed",
                       f"The bank or the gateway refused it ({code}).", status=502)
    return back(page, "synced")


async def redeliver_event(request: Request, who: SignedIn) -> Response:
    services = needs(request)
    found = _id(request.path_params["id"], "msg", services)
    if found is None:
        return message(request, "No such event", "That is not an event id.", status=404)
    event_id, region = found
    form = await request.form()
    target = form.get("back")
    page = target if isinstance(target, str) and target.startswith("/console/") else (
        "/console/applications")
    try:
        async with services.router.reader(region) as session:
            app_id = await session.scalar(
                select(OutboundEvent.application_id).where(OutboundEvent.id == event_id))
        if app_id is None:
            return message(request, "No such event",
                           f"Region {region} has no event {event_id}.", status=404)
        await redeliver(services.router, region, ApplicationId(app_id), event_id)
        await _record(services, region, who, "event.redelivered", event_id, request)
    except REGION_DOWN:
        return message(request, "Region unavailable",
                       f"The database of region {region} does not answer.", status=503)
    return back(page.split("?")[0], "redelivered")


async def start_erasure(request: Request, who: SignedIn) -> Response:
    """Erase a user: the operator types the user id twice (the second time to confirm)."""
    services = needs(request)
    form = await request.form()
    user, confirm = form.get("user_id"), form.get("confirm")
    found = _id(user, "usr", services)
    if found is None or confirm != user:
        return message(request, "Not erased",
                       "Type the user id, then type it again exactly to confirm. "
                       "Nothing was erased.", status=400)
    user_id, region = found
    try:
        async with services.router.reader(region) as session:
            app_id = await session.scalar(select(User.application_id).where(User.id == user_id))
        if app_id is None:
            return message(request, "No such user",
                           f"Region {region} has no user {user_id}.", status=404)
        created = await request_erasure(
            services.router, services.custody[region], user_id, ApplicationId(app_id),
            config=ErasureConfig.from_settings(services.settings), actor=who.operator_id,
            request_id=request_id(request), client_ip=client_ip(request),
        )
    except REGION_DOWN:
        return message(request, "Region unavailable",
                       f"The database of region {region} does not answer.", status=503)
    if created is None:
        return message(request, "No such user", "Nothing was erased.", status=404)
    return back("/console/erasures", "erasure")


async def retry_revocations(request: Request, who: SignedIn) -> Response:
    services = needs(request)
    found = _id(request.path_params["id"], "era", services)
    if found is None:
        return message(request, "No such request", "That is not an erasure request id.",
                       status=404)
    erasure_id, region = found
    try:
        await retry_failed(services.router, services.custody[region], services.banks,
                           erasure_id, actor=who.operator_id,
                           config=ErasureConfig.from_settings(services.settings))
    except REGION_DOWN:
        return message(request, "Region unavailable",
                       f"The database of region {region} does not answer.", status=503)
    return back("/console/erasures", "retried")


async def verify_chain(request: Request, who: SignedIn) -> Response:
    """Walk one region's audit chain now and show the result (any role may)."""
    services = needs(request)
    form = await request.form()
    region = form.get("region")
    if not isinstance(region, str) or region not in services.router.regions:
        return message(request, "No such region", "Choose a configured region.", status=400)
    try:
        report = await audit.verify(services.router.engine(region), region)
        await _record(services, region, who, "audit.verified", who.operator_id, request)
    except REGION_DOWN:
        return message(request, "Region unavailable",
                       f"The database of region {region} does not answer.", status=503)
    return render(request, "verified.html", title=f"Audit chain of {region}",
                  report=report, region=region)


async def disable_app(request: Request, who: SignedIn) -> Response:
    """Disable an application (every key refused from now on): its id typed to confirm.
    Written to every region, so every region must answer."""
    services = needs(request)
    app_id = request.path_params["id"]
    form = await request.form()
    if form.get("confirm") != app_id:
        return message(request, "Not disabled",
                       "Type the application id exactly to confirm. Nothing changed.",
                       status=400)
    try:
        await disable_application(services.router, app_id, actor=who.operator_id)
    except REGION_DOWN:
        return message(request, "A region is unavailable",
                       "Every region must answer to disable an application; nothing "
                       "changed.", status=503)
    except GatewayError as exc:
        return message(request, "Not disabled", str(exc), status=404)
    return back("/console/applications", "disabled")


async def revoke_api_key(request: Request, who: SignedIn) -> Response:
    """Revoke one API key now, by its public prefix (written to every region)."""
    services = needs(request)
    prefix = request.path_params["prefix"]
    try:
        await revoke_key(services.router, prefix, actor=who.operator_id)
    except REGION_DOWN:
        return message(request, "A region is unavailable",
                       "Every region must answer to revoke a key; nothing changed.",
                       status=503)
    except GatewayError as exc:
        return message(request, "Not revoked", str(exc), status=404)
    return back("/console/applications", "revoked")
