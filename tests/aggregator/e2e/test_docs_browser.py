"""``/docs`` renders the OpenAPI document in headless Chromium from packaged files only.

Every request the page makes is recorded: all of them go to the gateway's own origin
(no CDN), and the operations of ``/openapi.json`` appear on the page. A problem type's
link opens its HTML page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.aggregator.e2e.conftest import ARTIFACTS as ALL_ARTIFACTS
from tests.aggregator.e2e.conftest import Chromium, Gateway, assert_accessible

ARTIFACTS = ALL_ARTIFACTS / "docs-browser"

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_docs_render_the_openapi_document_offline(gateway: Gateway, chromium: Chromium
                                                       ) -> None:
    document = (await gateway.api.get("/openapi.json")).json()
    origins: set[str] = set()
    errors: list[str] = []

    def seen(request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https"):
            origins.add(f"{parts.scheme}://{parts.netloc}")

    context = await chromium()
    page = context.pages[0] if context.pages else await context.new_page()
    page.on("request", seen)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(f"{gateway.url}/docs")
    title = page.locator(".swagger-ui .info .title")
    await title.wait_for(timeout=20_000)
    assert document["info"]["title"] in await title.inner_text()
    await page.get_by_text("/v1/link/sessions", exact=True).first.wait_for()
    shown = await page.locator(".opblock-summary-description").all_inner_texts()
    expected = [op["summary"] for item in document["paths"].values()
                for op in item.values() if isinstance(op, dict) and "summary" in op]
    assert len(expected) >= 20
    missing = [s for s in expected if s.replace("`", "") not in
               {t.replace("`", "") for t in shown}]
    assert missing == []
    # Swagger UI's own markup is not axe-clean (its contrast, nested controls); the pages
    # that are ours are checked below.
    await page.screenshot(path=str(ARTIFACTS / "docs.png"))
    await page.goto(f"{gateway.url}/problems/not_found")
    assert await page.locator("h1").inner_text() == "Not found"
    await assert_accessible(page, "problem-not-found", ARTIFACTS)
    await page.goto(f"{gateway.url}/problems")
    await assert_accessible(page, "problems", ARTIFACTS)

    assert origins == {gateway.url}
    assert not [e for e in errors if "Content Security Policy" in e], errors
