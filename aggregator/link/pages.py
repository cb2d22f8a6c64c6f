"""Server-rendered pages of the Link flow: the bank picker, the outcome and error pages.

Plain HTML forms and one stylesheet, no script: they work with a keyboard, a screen
reader, a headless browser and an ``httpx`` client alike. Templates are Jinja2 files next
to this module, rendered with autoescaping on (:mod:`aggregator.link.rendering`), so a
template cannot forget to escape. The response headers keep the page out of frames (a
consent click is worth hijacking) and caches, and ``Referrer-Policy: no-referrer`` keeps
the link token in the page's URL from reaching the bank. An app's accent colour is one
inline ``<style>`` block allowed by its SHA-256 hash (CSP Level 3, "hash-source"); its
logo is a ``data:`` image (:mod:`aggregator.link.branding`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from starlette.responses import HTMLResponse

from aggregator.link.branding import Brand
from aggregator.link.errors import LinkError
from aggregator.link.rendering import DEFAULT_LOCALE, gettext, render
from connectors import BankProfile

STYLESHEET = "/link/static/link.css"
#: More banks than this in a region and the picker offers a search (a GET form).
SEARCH_THRESHOLD = 6

HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_ADVICE = {
    404: "Check that you opened the whole link, or go back to the app and start again.",
    410: "Links work for ten minutes. Go back to the app and start again to get a new one.",
    409: "Each link works once. If you already connected your bank, you are done; "
         "otherwise go back to the app and start again.",
    400: "Reload the page and choose your bank again.",
    403: "Finish connecting in the browser where you opened the link, or go back to the "
         "app and start again.",
    421: "Open the link exactly as the app gave it to you.",
}
_GENERIC_ADVICE = "Please go back to the app and try again in a few minutes."


@dataclass(frozen=True, slots=True)
class _Bank:
    id: str
    name: str
    country: str
    logo: str


def _headers(brand: Brand | None) -> dict[str, str]:
    css = brand.css() if brand else None
    if css is None and not (brand and brand.logo):
        return HEADERS
    styles = ""
    if css is not None:
        digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
        styles = f" 'sha256-{digest}'"
    images = " data:" if brand and brand.logo else ""
    policy = ("default-src 'none'; style-src 'self'" + styles + "; img-src 'self'" + images
              + "; base-uri 'none'; frame-ancestors 'none'")
    return {**HEADERS, "Content-Security-Policy": policy}


def _page(template: str, title: str, *, status: int = 200, request_id: str | None = None,
          locale: str = DEFAULT_LOCALE, brand: Brand | None = None, **context: object
          ) -> HTMLResponse:
    html = render(locale, template, title=title, stylesheet=STYLESHEET,
                  request_id=request_id, brand=brand,
                  brand_css=brand.css() if brand else None, **context)
    return HTMLResponse(html, status_code=status, headers=_headers(brand))


def logo_url(profile: BankProfile) -> str:
    return f"/link/banks/{profile.id}/logo"


def matching(banks: Sequence[BankProfile], query: str) -> list[BankProfile]:
    """The banks whose name, id or country contains every word of ``query``."""
    words = query.casefold().split()
    return [p for p in banks
            if all(w in f"{p.display_name} {p.id} {p.country}".casefold() for w in words)]


def picker_page(
    *, action: str, form_nonce: str, banks: Sequence[BankProfile], app_name: str,
    update: bool, request_id: str | None = None, locale: str = DEFAULT_LOCALE,
    brand: Brand | None = None, query: str = "", cancel_action: str | None = None,
) -> HTMLResponse:
    """The bank picker; one bank is preselected when the app named it.

    A region with more than :data:`SEARCH_THRESHOLD` banks gets a search: a GET form
    back to this page with ``q``, filtered here, so it works without script.
    """
    name = brand.name if brand else app_name
    heading = gettext(locale, "Reconnect your bank" if update else "Connect your bank")
    query = query.strip()[:60]
    if not banks:
        return _page("empty.html", heading, request_id=request_id, locale=locale,
                     brand=brand, heading=heading, app_name=name, form_nonce=form_nonce,
                     cancel_action=cancel_action)
    searchable = len(banks) > SEARCH_THRESHOLD
    shown = matching(banks, query) if searchable and query else list(banks)
    return _page(
        "picker.html", heading, request_id=request_id, locale=locale, brand=brand,
        heading=heading, update=update, app_name=name, action=action,
        form_nonce=form_nonce, preselect=len(banks) == 1, searchable=searchable,
        search_action=action, query=query if searchable else "",
        cancel_action=cancel_action,
        banks=[_Bank(p.id, p.display_name, p.country, logo_url(p)) for p in shown],
    )


def error_page(error: LinkError, *, request_id: str | None, locale: str = DEFAULT_LOCALE
               ) -> HTMLResponse:
    """The page for a refused step: what happened, what to do, and a reference."""
    return message_page(
        error.title, str(error), status=error.status, request_id=request_id,
        advice=_ADVICE.get(error.status, _GENERIC_ADVICE), locale=locale,
    )


def message_page(
    title: str, message: str, *, status: int, request_id: str | None, advice: str | None = None,
    locale: str = DEFAULT_LOCALE,
) -> HTMLResponse:
    """An error page (``role=alert``); texts found in the catalogue are translated."""
    heading = gettext(locale, title)
    return _page("error.html", heading, status=status, request_id=request_id, locale=locale,
                 heading=heading, message=gettext(locale, message),
                 advice=gettext(locale, advice or _GENERIC_ADVICE))


def success_page(
    title: str, message: str, *, request_id: str | None = None, advice: str | None = None,
    locale: str = DEFAULT_LOCALE,
) -> HTMLResponse:
    """A page announcing that something worked: ``role=status``, success styling."""
    heading = gettext(locale, title)
    return _page("success.html", heading, request_id=request_id, locale=locale,
                 heading=heading, message=message, advice=advice)


@cache
def stylesheet() -> bytes:
    return files("aggregator.link").joinpath("static", "link.css").read_bytes()
