"""Server-rendered pages of the Link flow: the bank picker and the error pages.

Plain HTML forms and one stylesheet, no script: they work with a keyboard, a screen
reader, a headless browser and an ``httpx`` client alike. Templates are
:class:`string.Template` files next to this module; every value is escaped here, before
substitution, so a template cannot forget to. The response headers keep the page out of
frames (a consent click is worth hijacking) and caches, and ``Referrer-Policy:
no-referrer`` keeps the link token in the page's URL from reaching the bank.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from html import escape
from importlib.resources import files
from string import Template

from starlette.responses import HTMLResponse

from aggregator.link.errors import LinkError
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
}
_GENERIC_ADVICE = "Please go back to the app and try again in a few minutes."


@cache
def _template(name: str) -> Template:
    return Template(files("aggregator.link").joinpath("templates", name).read_text("utf-8"))


def _page(
    title: str, body: str, *, status: int = 200, request_id: str | None = None
) -> HTMLResponse:
    reference = (
        f" Reference for support: <code>{escape(request_id)}</code>." if request_id else ""
    )
    html = _template("page.html").substitute(
        title=escape(title), stylesheet=STYLESHEET, body=body, reference=reference,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def logo_url(profile: BankProfile) -> str:
    return f"/link/banks/{profile.id}/logo"


def picker_page(
    *, action: str, form_nonce: str, banks: Sequence[BankProfile], app_name: str,
    update: bool, request_id: str | None = None,
) -> HTMLResponse:
    """The bank picker; one bank is preselected when the app named it."""
    heading = "Reconnect your bank" if update else "Connect your bank"
    if not banks:
        body = _template("empty.html").substitute(
            heading=escape(heading), app_name=escape(app_name)
        )
        return _page(heading, body, request_id=request_id)
    options = "\n".join(
        _template("bank.html").substitute(
            bank_id=escape(p.id), name=escape(p.display_name), country=escape(p.country),
            logo=escape(logo_url(p)), checked=" checked" if len(banks) == 1 else "",
        )
        for p in banks
    )
    verb = "renew its access to" if update else "see"
    lead = (
        f"{escape(app_name)} asks to {verb} your accounts, balances and transactions "
        "through this secure connection."
    )
    body = _template("picker.html").substitute(
        heading=escape(heading), lead=lead, action=escape(action),
        form_nonce=escape(form_nonce), options=options, app_name=escape(app_name),
    )
    return _page(heading, body, request_id=request_id)


def error_page(error: LinkError, *, request_id: str | None) -> HTMLResponse:
    """The page for a refused step: what happened, what to do, and a reference."""
    return message_page(
        error.title, str(error), status=error.status, request_id=request_id,
        advice=_ADVICE.get(error.status, _GENERIC_ADVICE),
    )


def message_page(
    title: str, message: str, *, status: int, request_id: str | None, advice: str | None = None,
) -> HTMLResponse:
    body = _template("error.html").substitute(
        heading=escape(title), message=escape(message),
        advice=escape(advice or _GENERIC_ADVICE),
    )
    return _page(title, body, status=status, request_id=request_id)


def success_page(title: str, message: str, *, advice: str | None = None) -> HTMLResponse:
    """A page that reports something that went well: announced politely
    (``role="status"``), not as an alert, and drawn as a success."""
    body = _template("success.html").substitute(
        heading=escape(title), message=escape(message), advice=escape(advice or ""),
    )
    return _page(title, body)


@cache
def stylesheet() -> bytes:
    return files("aggregator.link").joinpath("static", "link.css").read_bytes()
