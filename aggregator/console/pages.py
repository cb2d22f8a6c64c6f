"""The console's pages (``GET``): each reads every region from its own store.

A page gathers one :class:`~aggregator.store.outage.RegionResult` per region and the
template shows an unavailable region as such; no page fails because one region's
database is down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from aggregator.bankhealth.reads import RegionHealth, refresh_class, region_health
from aggregator.console import paging, reads
from aggregator.console.chart import latency_chart, outcomes_chart, refresh_chart
from aggregator.console.web import message, needs, render
from aggregator.errors import InvalidId
from aggregator.ids import parse_id
from aggregator.models import ConnectionStatus
from aggregator.models.base import utcnow
from aggregator.operators import SignedIn
from aggregator.store.outage import REGION_DOWN, RegionResult, each_region
from aggregator.sync import BankDirectory
from connectors import SyncPolicy

EXPIRY_DAYS = 30


def _regions(results: list[RegionResult[Any]]) -> dict[str, bool]:
    return {r.region: r.ok for r in results}


async def overview(request: Request, who: SignedIn) -> Response:
    router, now = needs(request).router, utcnow()

    async def read(region: str) -> reads.Overview:
        async with router.reader(region) as session:
            return await reads.overview(session, now)

    return render(request, "overview.html", title="Overview",
                  results=await each_region(router, read))


async def applications(request: Request, who: SignedIn) -> Response:
    router, now = needs(request).router, utcnow()

    async def read(region: str) -> tuple[list[reads.AppView], dict[str, reads.Delivery]]:
        async with router.reader(region) as session:
            return await reads.applications(session), await reads.deliveries(session, now)

    results = await each_region(router, read)
    # Applications are replicated: any region that answered lists them all.
    apps = next((r.value[0] for r in results if r.value is not None), [])
    health = {r.region: r.value[1] for r in results if r.value is not None}
    return render(request, "applications.html", title="Applications", apps=apps,
                  health=health, regions=_regions(results))


async def _paged(
    request: Request, name: str, regions: Sequence[str],
    fetch: Callable[[str, list[str]], Awaitable[list[Any]]],
    key: Callable[[Any], list[str]],
) -> tuple[list[RegionResult[list[Any]]], paging.Paged]:
    """One page of a list, region by region (aggregator/console/paging.py): ``fetch``
    reads a region from a position (``[]``: the top) and returns up to a page and one;
    ``key`` gives a row's position. Raises :class:`paging.BadCursor`."""
    router = needs(request).router
    positions = paging.read(request, name, router.regions)
    chosen = {r: positions[r] for r in regions if positions.get(r) is not None}

    async def read(region: str) -> list[Any]:
        return await fetch(region, chosen[region] or [])

    read_out = await each_region(router, read, tuple(chosen)) if chosen else []
    after: dict[str, paging.Position] = {r: None for r in router.regions}
    shown: dict[str, RegionResult[list[Any]]] = {}
    for r in read_out:
        if r.value is None:
            after[r.region] = chosen[r.region]  # down: try it again on the next page
            shown[r.region] = r
            continue
        if len(r.value) > paging.PAGE:
            after[r.region] = key(r.value[paging.PAGE - 1])
        shown[r.region] = RegionResult(r.region, r.value[:paging.PAGE])
    results = [shown.get(region, RegionResult(region, [])) for region in regions]
    return results, paging.links(request, name, after)


def _bad_cursor(request: Request) -> Response:
    return message(request, "Page link not valid",
                   "That page link does not belong to this list; start from the first page.",
                   status=400)


def _time_key(at: Callable[[Any], datetime]) -> Callable[[Any], list[str]]:
    return lambda row: [at(row).isoformat(), row.id]


def _after(position: list[str]) -> reads.After:
    if not position:
        return None
    if len(position) != 2:
        raise paging.BadCursor("a position is malformed")
    return paging.at_time(position), position[1]


def _choice(request: Request, name: str, allowed: set[str] | None = None) -> str | None:
    value = request.query_params.get(name, "").strip()
    if not value or len(value) > 64 or (allowed is not None and value not in allowed):
        return None
    return value


async def connections(request: Request, who: SignedIn) -> Response:
    router = needs(request).router
    where = reads.ConnectionFilter(
        status=_choice(request, "status", {s.value for s in ConnectionStatus}),
        bank=_choice(request, "bank"), application=_choice(request, "application"),
        region=_choice(request, "region", set(router.regions)),
    )

    async def fetch(region: str, position: list[str]) -> list[Any]:
        after = _after(position)
        async with router.reader(region) as session:
            return await reads.connections(session, where, after)

    try:
        results, pages = await _paged(
            request, "connections", [where.region] if where.region else router.regions,
            fetch, _time_key(lambda c: c.created_at))
    except paging.BadCursor:
        return _bad_cursor(request)
    rows = sorted((c for r in results if r.value for c in r.value),
                  key=lambda c: c.created_at, reverse=True)
    banks = sorted({c.bank_id for c in rows} | ({where.bank} if where.bank else set()))
    return render(request, "connections.html", title="Connections", rows=rows,
                  where=where, regions=_regions(results), all_regions=router.regions,
                  statuses=[s.value for s in ConnectionStatus], banks=banks, pages=pages,
                  per_page=paging.PAGE)


async def connection(request: Request, who: SignedIn) -> Response:
    router = needs(request).router
    connection_id = request.path_params["id"]
    try:
        region = parse_id(connection_id, kind="con", regions=router.regions).region
    except InvalidId:
        region = None
    if region is None:
        return message(request, "No such connection",
                       "That is not a connection id of this gateway.", status=404)
    try:
        position = paging.read(request, "events", [region])[region]
        events_after = _after(position or [])
    except paging.BadCursor:
        return _bad_cursor(request)
    try:
        async with router.reader(region) as session:
            detail = await reads.connection(session, connection_id, events_after)
    except REGION_DOWN:
        return message(request, "Region unavailable",
                       f"The database of region {region} does not answer; try again later.",
                       status=503)
    if detail is None:
        return message(request, "No such connection",
                       f"Region {region} has no connection {connection_id}.", status=404)
    more = len(detail.events) > reads.EVENTS_PAGE
    detail.events = detail.events[:reads.EVENTS_PAGE]
    pages = paging.links(request, "events", {
        region: [detail.events[-1].created_at.isoformat(), detail.events[-1].id]
        if more else None})
    return render(request, "connection.html", title=f"Connection {connection_id}",
                  d=detail, region=region, now=utcnow(), pages=pages,
                  policy=sync_policy(needs(request).banks, detail.connection.bank_id, region))


def sync_policy(banks: Any, bank_id: str, region: str) -> SyncPolicy:
    """The bank's ``[sync]`` policy (the PSD2 default for a bank without a profile)."""
    if isinstance(banks, BankDirectory):
        if banks.is_plaid(bank_id):
            return banks.plaid_policy(region)
        try:
            return banks.profile(bank_id).sync
        except Exception:
            return SyncPolicy()
    return SyncPolicy()


async def banks(request: Request, who: SignedIn) -> Response:
    services = needs(request)
    router, now = services.router, utcnow()
    directory = services.banks if isinstance(services.banks, BankDirectory) else None
    profiles = {r: directory.in_region(r) if directory else [] for r in router.regions}
    budgets = {p.id: p.sync.daily_budget for ps in profiles.values() for p in ps}

    async def read(region: str) -> tuple[dict[str, reads.BankStats], Any, RegionHealth]:
        async with router.reader(region) as session:
            return (await reads.bank_stats(session, now, budgets),
                    await reads.outcomes_by_bank(session, now),
                    await region_health(session, now))

    results = await each_region(router, read)
    charts = {
        r.region: {bank: outcomes_chart(days, now, title=f"{bank} in {r.region}")
                   for bank, days in sorted(r.value[1].items())}
        for r in results if r.value is not None
    }
    health = {r.region: _health_rows(r.value[2], now, r.region, profiles[r.region],
                                     r.value[0])
              for r in results if r.value is not None}
    return render(request, "banks.html", title="Banks", profiles=profiles,
                  profile_ids={r: {p.id for p in ps} for r, ps in profiles.items()},
                  results=results, charts=charts, health=health)


def _health_rows(health: RegionHealth, now: datetime, region: str, profiles: list[Any],
                 stats: dict[str, reads.BankStats]) -> list[dict[str, Any]]:
    """One row per bank of the region (profiles first, then banks only the data names):
    last hour's figures, the breaker, and the two charts."""
    banks = [p.id for p in profiles]
    seen = set(banks)
    for bank in sorted({*health.last_hour, *health.hourly, *health.breakers, *stats}):
        if bank not in seen:
            banks.append(bank)
            seen.add(bank)
    rows = []
    for bank in banks:
        hourly = health.hourly.get(bank, {})
        outcomes: dict[str, dict[str, int]] = {}
        for hour, summary in hourly.get("refresh", {}).items():
            by = outcomes.setdefault(hour, {})
            for outcome, n in summary.outcomes.items():
                key = refresh_class(outcome)
                by[key] = by.get(key, 0) + n
        latency = {hour: s.p95 for hour, s in hourly.get("sync", {}).items()}
        found = stats.get(bank)
        rows.append({
            "bank": bank, "ops": health.last_hour.get(bank, {}),
            "breaker": health.breakers.get(bank),
            "exhausted": found.exhausted if found else 0,
            "refresh_chart": refresh_chart(outcomes, now, title=f"{bank} in {region}")
            if outcomes else None,
            "latency_chart": latency_chart(latency, now, title=f"{bank} in {region}")
            if latency else None,
        })
    return rows


async def expiries(request: Request, who: SignedIn) -> Response:
    router, now = needs(request).router, utcnow()

    async def read(region: str) -> list[Any]:
        async with router.reader(region) as session:
            return await reads.expiries(session, now, EXPIRY_DAYS)

    return render(request, "expiries.html", title="Consent expiries", now=now,
                  days=EXPIRY_DAYS, results=await each_region(router, read))


async def erasures(request: Request, who: SignedIn) -> Response:
    router = needs(request).router

    async def fetch(region: str, position: list[str]) -> list[Any]:
        after = _after(position)
        async with router.reader(region) as session:
            return await reads.erasures(session, after)

    try:
        results, pages = await _paged(request, "erasures", router.regions, fetch,
                                      lambda v: [v.request.requested_at.isoformat(),
                                                 v.request.id])
    except paging.BadCursor:
        return _bad_cursor(request)
    return render(request, "erasures.html", title="Erasure requests", now=utcnow(),
                  results=results, pages=pages)


async def keys(request: Request, who: SignedIn) -> Response:
    services = needs(request)
    router = services.router

    async def read(region: str) -> reads.Custody:
        async with router.reader(region) as session:
            return await reads.custody(session)

    results = await each_region(router, read)
    schedule: dict[str, dict[str, Any]] = {}
    for r in results:
        config = services.settings.regions[r.region]
        every: timedelta | None = config.rotate_every
        rotation = r.value.rotation if r.value else None
        schedule[r.region] = {
            "provider": type(config.keys).__name__.removesuffix("Config"),
            "every": every,
            "next": rotation.rotated_at + every if rotation and every else None,
        }
    return render(request, "keys.html", title="Key custody", results=results,
                  schedule=schedule)


async def audit_trail(request: Request, who: SignedIn) -> Response:
    router = needs(request).router
    where = reads.AuditFilter(action=_choice(request, "action"),
                              actor=_choice(request, "actor"),
                              target=_choice(request, "target"))
    region = _choice(request, "region", set(router.regions))

    async def fetch(r: str, position: list[str]) -> list[Any]:
        before = paging.at_int(position) if position else None
        async with router.reader(r) as session:
            return await reads.audit_events(session, where, before)

    try:
        results, pages = await _paged(request, "audit", [region] if region else router.regions,
                                      fetch, lambda e: [str(e.seq)])
    except paging.BadCursor:
        return _bad_cursor(request)
    return render(request, "audit.html", title="Audit trail", results=results, where=where,
                  region=region, all_regions=router.regions, report=None, pages=pages)
