"""Server-rendered pages of the Link flow: the bank picker and the error pages.

Plain HTML forms and one stylesheet, no script: they work with a keyboard, a screen
reader, a headless browser and an ``httpx`` client alike. Templates are Jinja2 files next
to this module, loaded through :func:`aggregator.templating.environment` like the
operator console's: every value is escaped by the template engine, so no page can forget
to. The response headers keep the page out of
frames (a consent click is worth hijacking) and caches, and ``Referrer-Policy:
no-referrer`` keeps the link token in the page's URL from reaching the bank. An app's
branding (:mod:`aggregator.branding`) adds one inline ``<style>`` allowed by its
SHA-256 hash (CSP Level 3, "hash-source") and a ``data:`` logo; nothing else widens.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from functools import cache
from importlib.resources import files

from jinja2 import Environment
from starlette.responses import HTMLResponse

from aggregator.branding import Brand
from aggregator.link.errors import LinkError
from aggregator.link.i18n import DEFAULT, translations
from aggregator.templating import environment
from connectors import BankProfile

STYLESHEET = "/link/static/link.css"

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
    502: "Go back to the app and choose another bank, or try this one again later.",
}
_GENERIC_ADVICE = "Please go back to the app and try again in a few minutes."


@cache
def _env(locale: str) -> Environment:
    env = environment("aggregator.link", extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.globals["logo_url"] = logo_url
    return env


def _t(locale: str, text: str) -> str:
    return translations(locale).gettext(text)


def _policy(brand: Brand | None) -> str:
    """The page's CSP: :data:`HEADERS`' own, plus what ``brand`` needs and no more."""
    css = brand.css() if brand else None
    if css is None and not (brand and brand.logo):
        return HEADERS["Content-Security-Policy"]
    styles = ""
    if css is not None:
        digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
        styles = f" 'sha256-{digest}'"
    images = " data:" if brand and brand.logo else ""
    return (f"default-src 'none'; style-src 'self'{styles}; img-src 'self'{images}; "
            "base-uri 'none'; frame-ancestors 'none'")


def _page(
    template: str, title: str, *, status: int = 200, request_id: str | None = None,
    locale: str = DEFAULT, brand: Brand | None = None, **context: object,
) -> HTMLResponse:
    html = _env(locale).get_template(template).render(
        title=title, stylesheet=STYLESHEET, request_id=request_id, locale=locale,
        brand=brand, brand_css=brand.css() if brand else None, **context,
    )
    headers = {**HEADERS, "Content-Language": locale, "Vary": "Accept-Language",
               "Content-Security-Policy": _policy(brand)}
    return HTMLResponse(html, status_code=status, headers=headers)


def logo_url(profile: BankProfile) -> str:
    return f"/link/banks/{profile.id}/logo"


#: From this many banks on, the picker offers a search (a plain GET form, no script).
SEARCH_FROM = 7


def matching(banks: Sequence[BankProfile], query: str) -> list[BankProfile]:
    """The banks whose name, id or country contains every word of ``query``."""
    words = query.casefold().split()
    return [b for b in banks
            if all(w in f"{b.display_name} {b.id} {b.country}".casefold() for w in words)]


def picker_page(
    *, action: str, form_nonce: str, banks: Sequence[BankProfile], app_name: str,
    update: bool, request_id: str | None = None, query: str = "", locale: str = DEFAULT,
    brand: Brand | None = None,
) -> HTMLResponse:
    """The bank picker; one bank is preselected when the app named it. With many banks,
    a search narrows the list (``query``, from the page's own search form)."""
    heading = _t(locale, "Reconnect your bank" if update else "Connect your bank")
    app_name = brand.name if brand else app_name
    if not banks:
        return _page("empty.html", heading, request_id=request_id, heading=heading,
                     app_name=app_name, locale=locale, brand=brand)
    searchable = len(banks) >= SEARCH_FROM
    query = query.strip()[:64] if searchable else ""
    shown = matching(banks, query) if query else list(banks)
    return _page("picker.html", heading, request_id=request_id, heading=heading,
                 app_name=app_name, update=update, action=action, form_nonce=form_nonce,
                 banks=shown, searchable=searchable, query=query, total=len(banks),
                 locale=locale, brand=brand)


def error_page(error: LinkError, *, request_id: str | None, locale: str = DEFAULT
               ) -> HTMLResponse:
    """The page for a refused step: what happened, what to do, and a reference."""
    return message_page(
        error.title, str(error), status=error.status, request_id=request_id,
        advice=_ADVICE.get(error.status, _GENERIC_ADVICE), locale=locale,
    )


def message_page(
    title: str, message: str, *, status: int, request_id: str | None, advice: str | None = None,
    locale: str = DEFAULT,
) -> HTMLResponse:
    """An error page; title, message and advice are shown in ``locale`` when its
    catalogue has them (their English text is the key), else in English."""
    title = _t(locale, title)
    return _page("error.html", title, status=status, request_id=request_id, heading=title,
                 message=_t(locale, message), advice=_t(locale, advice or _GENERIC_ADVICE),
                 locale=locale)


def success_page(title: str, message: str, *, advice: str | None = None) -> HTMLResponse:
    """A page that reports something that went well: announced politely
    (``role="status"``), not as an alert, and drawn as a success."""
    return _page("success.html", title, heading=title, message=message, advice=advice or "")


@cache
def stylesheet() -> bytes:
    return files("aggregator.link").joinpath("static", "link.css").read_bytes()
