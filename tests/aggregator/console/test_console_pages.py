"""Every console page renders for a signed-in operator, from every region, and never
shows a sealed value; a region whose database is down shows as unavailable."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from aggregator.console.chart import outcomes_chart
from aggregator.models import AuditEvent, SyncOutcome
from aggregator.store import RegionRouter
from aggregator.sync.runs import RunStart, add_run
from aggregator.sync.upsert import SyncCounts
from tests.aggregator._factories import Linked
from tests.aggregator.console.conftest import Console, ConsoleFactory, region_down

PAGES = ("/console", "/console/applications", "/console/connections", "/console/banks",
         "/console/expiries", "/console/erasures", "/console/keys", "/console/audit")


async def test_every_page_renders_for_an_operator(admin: Console, linked: Linked) -> None:
    for path in (*PAGES, f"/console/connections/{linked.connection.id}"):
        page = await admin.http.get(path)
        assert page.status_code == 200, (path, page.text)
        assert page.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        assert "unavailable" not in page.text.lower() or path == "/console/banks"


async def test_no_sealed_value_appears_on_any_console_page(
    admin: Console, linked: Linked
) -> None:
    """Holder name, full IBAN, tokens and the app's own user id are sealed at rest; the
    console shows the masked number only."""
    secrets = ["Erika Mustermann", "DE89370400440532013000", "370400440532013000",
               "at-sealed-secret", "rt-sealed-secret", "erika@example.test"]
    seen = ""
    for path in (*PAGES, f"/console/connections/{linked.connection.id}",
                 "/console/connections?region=eu&status=active"):
        page = await admin.http.get(path)
        assert page.status_code == 200
        seen += page.text
        for secret in secrets:
            assert secret not in page.text, (path, secret)
    assert "3000" in seen  # the masked account number is there, as intended
    assert linked.connection.id in seen


async def test_connections_filter_by_status_bank_region_and_application(
    admin: Console, linked: Linked, make_linked: object
) -> None:
    us = await make_linked("us")  # type: ignore[operator]
    both = (await admin.http.get("/console/connections")).text
    assert linked.connection.id in both
    assert us.connection.id in both
    only_us = (await admin.http.get("/console/connections?region=us")).text
    assert us.connection.id in only_us
    assert linked.connection.id not in only_us
    none = (await admin.http.get("/console/connections?status=revoked")).text
    assert linked.connection.id not in none
    assert "No connection matches" in none
    by_app = await admin.http.get(
        f"/console/connections?application={linked.connection.application_id}&bank=sandbox")
    assert linked.connection.id in by_app.text
    assert us.connection.id in by_app.text
    other = await admin.http.get("/console/connections?bank=elsewhere")
    assert linked.connection.id not in other.text


async def test_a_region_whose_database_is_down_shows_as_unavailable(
    admin: Console, linked: Linked, region_router: RegionRouter
) -> None:
    """The us engine is pointed at a closed port: every page still answers, with eu's
    data, and says us is unavailable."""
    with region_down(region_router, "us"):
        for path in PAGES:
            page = await admin.http.get(path)
            assert page.status_code == 200, (path, page.text)
            assert re.search(r"Region <strong>us</strong> is unavailable", page.text), path
        connections = (await admin.http.get("/console/connections")).text
        assert linked.connection.id in connections


@pytest.mark.parametrize("path", ["/docs", "/problems", "/problems/not_found"])
async def test_docs_and_problem_pages_are_html(admin: Console, path: str) -> None:
    page = await admin.http.get(path, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "cdn" not in page.text.lower()


@pytest.mark.parametrize("down", ["eu", "us"])
async def test_operators_sign_in_and_work_while_either_region_is_down(
    console_factory: ConsoleFactory, region_router: RegionRouter, operators: dict[str, str],
    down: str,
) -> None:
    """Operator accounts and sessions live in every region: losing one, even the first
    configured, locks nobody out; the sign-in is in the trail of the region that is up."""
    up = "us" if down == "eu" else "eu"
    browser = await console_factory()
    with region_down(region_router, down):
        answer = await browser.sign_in("ada")
        assert answer.status_code == 303
        page = await browser.http.get("/console")
        assert page.status_code == 200
        assert f"Region <strong>{down}</strong> is unavailable" in page.text
        assert f'id="ov-{up}">Region {up}</h2>' in page.text
    async with region_router.reader(up) as session:
        signed = (await session.execute(select(AuditEvent.actor).where(
            AuditEvent.action == "operator.signed_in"))).scalars().all()
    assert signed == [operators["ada"]]


def test_the_chart_escapes_its_labels_and_scales_its_bars() -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    svg = str(outcomes_chart({"2026-12-06": {"connection.synced": 4,
                                             "connection.reauth_required": 2}},
                             now, title="<script>bank</script>"))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert svg.count("<rect") == 2
    assert "2026-12-06: 4 synced" in svg
    assert "6 outcomes in 14 days, at most 6 a day" in svg


async def test_with_every_region_down_the_console_says_so(
    admin: Console, console_factory: ConsoleFactory, region_router: RegionRouter
) -> None:
    with region_down(region_router, "eu"), region_down(region_router, "us"):
        page = await admin.http.get("/console")
        assert page.status_code == 503
        assert "database answers right now" in page.text
        answer = await (await console_factory()).sign_in("ada")
        assert answer.status_code == 503
        assert "nobody can sign in right now" in answer.text


async def test_the_connection_page_lists_its_sync_runs(
    admin: Console, linked: Linked, region_router: RegionRouter
) -> None:
    page = f"/console/connections/{linked.connection.id}"
    assert "No sync has run yet." in (await admin.http.get(page)).text
    async with region_router.session("eu") as session, session.begin():
        start = RunStart(linked.connection, "webhook", datetime.now(UTC))
        add_run(session, start, SyncOutcome.FAILED, datetime.now(UTC),
                error_code="item_login_required")
        add_run(session, RunStart(linked.connection, "on_demand", datetime.now(UTC)),
                SyncOutcome.COMPLETE, datetime.now(UTC),
                counts=SyncCounts(accounts=2, added=7, modified=1, removed=3))
    shown = (await admin.http.get(page)).text
    runs = shown[shown.index('id="runs"'):shown.index('id="history"')]
    assert re.search(r"<td>on_demand</td><td><span class=\"tag\">complete</span></td>"
                     r"<td>—</td><td>2</td><td>\+7 ~1 -3</td>", runs), runs
    assert re.search(r"<td>webhook</td><td><span class=\"tag bad\">failed</span></td>"
                     r"<td><code>item_login_required</code></td>", runs), runs
    assert runs.index("on_demand") < runs.index("webhook")  # newest first
