"""The Banks page's health figures, a connection's refresh history, and keyset paging.

Figures are written the way processes write them (:class:`CallRecorder`, heartbeats),
then read through the console as a viewer would, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re

import pytest

from aggregator.bankhealth import CallRecorder
from aggregator.bankhealth.store import publish_breakers
from aggregator.console import paging, reads
from aggregator.custody import RegionCustody
from aggregator.erasure import ErasureConfig
from aggregator.erasure.requests import request_erasure
from aggregator.events.outbox import emit
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter
from tests.aggregator._factories import Linked, LinkFactory
from tests.aggregator.console.conftest import Console, region_down

_NEXT = re.compile(r'<a href="([^"]+)" rel="next">Next page</a>')


def _next(html: str) -> str | None:
    found = _NEXT.search(html)
    return found.group(1).replace("&amp;", "&") if found else None


async def test_the_banks_page_shows_breakers_error_rates_latency_and_charts(
    viewer: Console, linked: Linked, region_router: RegionRouter
) -> None:
    now = utcnow()
    recorder = CallRecorder(region_router)
    for i in range(10):
        recorder.call("eu", "sandbox", "refresh", "ok" if i < 8 else "unavailable", 0.2)
    recorder.call("eu", "sandbox", "sync", "complete", 1.5)
    recorder.call("eu", "sandbox", "consent", "ok", 0.1)
    await recorder.flush()
    await publish_breakers(region_router, "eu", "w1:1", {"sandbox": ("open", now)}, now)
    await publish_breakers(region_router, "eu", "w2:2", {"sandbox": ("closed", now)}, now)

    page = await viewer.http.get("/console/banks")
    assert page.status_code == 200
    eu = page.text.split('id="banks-eu"')[1].split('id="banks-us"')[0]
    row = eu.split("Bank health, last hour")[1].split("<code>sandbox</code>")[1].split("</tr>")[0]
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert "open</span> in 1 of 2 processes" in cells[0]
    assert cells[1:9] == ["10", "20.0 %", "≤ 0.25 s", "1", "0.0 %", "≤ 2.5 s", "1", "0"]
    assert 'aria-label="sandbox in eu: 10 refresh calls in 24 hours' in eu
    assert "p95 sync duration per hour" in eu
    us = page.text.split('id="banks-us"')[1]
    assert "open</span>" not in us  # eu's heartbeats are eu's alone


async def test_a_connection_page_lists_its_refresh_attempts_without_tokens(
    viewer: Console, linked: Linked, region_router: RegionRouter
) -> None:
    recorder = CallRecorder(region_router)
    recorder.attempt("eu", connection_id=linked.connection.id, user_id=linked.user.id,
                     bank_id="sandbox", outcome="unavailable", error_code="bank_unavailable",
                     worker="host-a:17")
    await recorder.flush()
    page = (await viewer.http.get(f"/console/connections/{linked.connection.id}")).text
    history = page.split('id="refresh-history"')[1].split("</table>")[0]
    assert "unavailable" in history
    assert "bank_unavailable" in history
    assert "host-a:17" in history
    assert "rt-sealed-secret" not in page
    assert "at-sealed-secret" not in page


async def test_connections_page_per_region_with_a_cursor_and_no_offset(
    viewer: Console, make_linked: LinkFactory, monkeypatch: pytest.MonkeyPatch,
    region_router: RegionRouter,
) -> None:
    monkeypatch.setattr(paging, "PAGE", 2)
    eu = [(await make_linked("eu")).connection.id for _ in range(5)]
    us = [(await make_linked("us")).connection.id]
    seen: list[str] = []
    url: str | None = "/console/connections?bank=sandbox"
    pages = 0
    while url is not None:
        page = await viewer.http.get(url)
        assert page.status_code == 200
        shown = re.findall(r"<code>(con_[a-z]+_[a-z2-7]{26})</code></a>", page.text)
        assert len([c for c in shown if c.startswith("con_eu_")]) <= 2
        seen += shown
        url = _next(page.text)
        if url is not None:
            assert "bank=sandbox" in url
            assert "cursor=" in url
            assert "offset" not in url
        pages += 1
        assert pages <= 5
    assert sorted(seen) == sorted(eu + us)  # every row once, none twice
    assert pages == 3

    # A region that is down on a page keeps its place: its rows come on later pages.
    first = await viewer.http.get("/console/connections")
    with region_down(region_router, "eu"):
        second = await viewer.http.get(_next(first.text) or "")
        assert "Region <strong>eu</strong> is unavailable" in second.text
    later = _next(second.text)
    assert later is not None
    third = await viewer.http.get(later)
    assert len(re.findall(r"<code>con_eu_", third.text)) == 2


@pytest.mark.parametrize("cursor", ["%%%", "e30", "eyJ2IjoxLCJsaXN0IjoiYXVkaXQiLCJhdCI6e319"])
async def test_a_bad_or_foreign_cursor_is_a_400_page(viewer: Console, cursor: str) -> None:
    page = await viewer.http.get("/console/connections", params={"cursor": cursor})
    assert page.status_code == 400
    assert "Page link not valid" in page.text


async def test_audit_erasures_and_events_lists_page_too(
    viewer: Console, linked: Linked, region_router: RegionRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(paging, "PAGE", 1)
    monkeypatch.setattr(reads, "EVENTS_PAGE", 1)
    audit = await viewer.http.get("/console/audit?region=eu")
    following = _next(audit.text)
    assert following is not None
    assert "region=eu" in following
    seqs = [int(s) for s in re.findall(r"<tr><td>(\d+)</td>", audit.text)]
    later = [int(s) for s in re.findall(r"<tr><td>(\d+)</td>",
                                        (await viewer.http.get(following)).text)]
    assert len(seqs) == 1
    assert later
    assert later[0] < seqs[0]

    async with region_router.session("eu") as session, session.begin():
        await emit(session, linked.connection.application_id, "connection.reauthorized",
                   {"connection_id": linked.connection.id, "user_id": linked.user.id})
    detail = await viewer.http.get(f"/console/connections/{linked.connection.id}")
    assert "<code>connection.reauthorized</code>" in detail.text  # newest first
    assert "<code>connection.created</code>" not in detail.text
    older = _next(detail.text)
    assert older is not None
    rest = await viewer.http.get(older)
    assert "<code>connection.created</code>" in rest.text
    assert _next(rest.text) is None

    erasures = await viewer.http.get("/console/erasures")
    assert erasures.status_code == 200
    assert _next(erasures.text) is None


async def test_erasure_requests_page_newest_first_without_repeats(
    viewer: Console, make_linked: LinkFactory, region_router: RegionRouter,
    custody: dict[str, RegionCustody], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(paging, "PAGE", 2)
    made = []
    for _ in range(3):
        linked = await make_linked("eu")
        found = await request_erasure(region_router, custody["eu"], linked.user.id,
                                      linked.connection.application_id,
                                      config=ErasureConfig(), actor="operator")
        assert found is not None
        made.append(found.id)
    first = await viewer.http.get("/console/erasures")
    following = _next(first.text)
    assert following is not None
    second = await viewer.http.get(following)
    assert _next(second.text) is None
    shown = [re.findall(r"<code>(era_eu_[a-z2-7]{26})</code>", p.text) for p in (first, second)]
    assert [len(s) for s in shown] == [2, 1]
    assert sorted(shown[0] + shown[1]) == sorted(made)
