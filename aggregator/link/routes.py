"""The Link flow's routes: the session API for apps, the hosted page and the callback.

- ``POST /v1/link/sessions`` (API key): a link token and the URL of its page;
- ``GET /link/{token}``: the bank picker; ``POST /link/{token}``: the choice, answered
  with a 303 to the bank's authorization endpoint;
- ``GET /link/callback``: the one redirect URI registered at every bank; answered with a
  303 to the app's redirect URI carrying ``connection_id`` and ``outcome`` only.

Pages answer refusals with HTML error pages (with the request id), never JSON, since a
person is reading. Nothing here logs a URL: the access log names route templates, and
``/link/{token}`` and the callback's query are bearer material.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from aggregator.http.problems import FieldError, HttpProblem, NotFound, ValidationFailed
from aggregator.http.routing import ApiRoute, Call, Handler, Operation
from aggregator.http.schema import rules
from aggregator.http.services import services_of
from aggregator.http.views import ID
from aggregator.link import browser
from aggregator.link.accounts_page import accounts_page
from aggregator.link.errors import (
    LinkError,
    LinkFormInvalid,
    LinkHostRefused,
    LinkNotFound,
    LinkOtherBrowser,
    LinkRequestInvalid,
)
from aggregator.link.i18n import LOCALES, negotiate
from aggregator.link.misconfiguration import BankNotLinkable, count
from aggregator.link.outcome import Outcome
from aggregator.link.pages import (
    HEADERS,
    error_page,
    message_page,
    picker_page,
    stylesheet,
)
from aggregator.link.picking import ACCOUNTS_PATH, choose_accounts
from aggregator.link.sessions import LinkRequest, create_link_session, open_link
from aggregator.link.wiring import LinkComponents, components
from aggregator.plaid.link import plaid_link_token
from aggregator.settings.values import is_loopback
from aggregator.sync import UnknownBank
from connectors import ConnectorError

log = logging.getLogger(__name__)

CALLBACK_PATH = "/link/callback"
_OTHER_BROWSER = "This link was opened in another browser, so it cannot continue here."
#: Names the region of the session in flight, so the callback asks that region first.


@dataclass(frozen=True)
class CreateLinkSession:
    """Ask for a link session; with ``connection_id`` it re-consents that connection."""

    user_id: str = field(metadata=rules(pattern=ID, description="The user who links."))
    redirect_uri: str = field(metadata=rules(
        min_length=1, max_length=2048,
        description="Where the user returns; must be on the application's allow-list, "
                    "exactly. It receives `connection_id` and `outcome` "
                    "(`success`, `denied`, `cancelled` or `error`) and nothing else.",
    ))
    bank_id: str | None = field(default=None, metadata=rules(
        pattern=r"^[a-z0-9][a-z0-9-]{1,62}$",
        description="Skip the picker's choice: offer only this bank.",
    ))
    connection_id: str | None = field(default=None, metadata=rules(
        pattern=ID, description="Update mode: re-consent this connection; it keeps its "
                                "id and data.",
    ))
    locale: str | None = field(default=None, metadata=rules(
        pattern=r"^(en|de|fr|es)(-[A-Za-z0-9]{1,8})*$",
        description="The Link page's language (`en`, `de`, `fr` or `es`, optionally with a "
                    "region, e.g. `de-AT`); without it the browser's `Accept-Language` "
                    "chooses, then English.",
    ))


@dataclass(frozen=True)
class PlaidLinkOut:
    """What the app's frontend passes to Plaid Link (``Plaid.create({token})``)."""

    link_token: str = field(metadata=rules(
        description="Plaid's Link token; after Link's `onSuccess`, send its `public_token` "
                    "with this session's id to `POST /v1/plaid/exchange`."))
    expiration: datetime


@dataclass(frozen=True)
class LinkSessionOut:
    """A link session; the token is shown once and opens ``link_url`` for ten minutes.

    For ``bank_id`` "plaid" (or an update of a Plaid connection) the user links in the
    app's frontend through Plaid Link instead: ``plaid`` carries its token.
    """

    link_token: str
    link_url: str
    expires_at: datetime
    link_session_id: str | None = field(default=None, metadata=rules(pattern=ID))
    plaid: PlaidLinkOut | None = None


def _base_url(request: Request, parts: LinkComponents) -> str:
    """``public_url`` when configured; else the request's own, on a loopback host only.

    Behind a proxy the request's ``Host`` is internal or the client's choice, and the
    base URL becomes the ``redirect_uri`` sent to the bank and the link URL given to the
    app: outside loopback only ``[http] public_url`` may say where the gateway is.
    """
    if parts.public_url:
        return parts.public_url
    try:
        host = request.url.hostname or ""
        base = str(request.base_url).rstrip("/")
    except ValueError:  # a Host header that is not host[:port]
        host, base = "", ""
    if not is_loopback(host.strip("[]")):
        raise LinkHostRefused("This gateway builds links only for the address it is "
                              "configured with.")
    return base


async def create_session(call: Call) -> LinkSessionOut:
    body = call.body_as(CreateLinkSession)
    parts = components(call.services)
    try:
        base = _base_url(call.request, parts)
    except LinkHostRefused:
        raise MisdirectedRequest(
            "set [http] public_url: without it link URLs are built only for loopback hosts"
        ) from None
    try:
        issued = await create_link_session(
            call.services.router, parts.banks,
            LinkRequest(call.caller, body.user_id, body.redirect_uri, body.bank_id,
                        body.connection_id, body.locale),
            request_id=call.request_id, client_ip=call.client_ip,
        )
    except LinkNotFound as exc:
        raise NotFound(str(exc)) from None
    except LinkRequestInvalid as exc:
        raise ValidationFailed([FieldError(exc.detail, pointer=exc.pointer)]) from None
    plaid = None
    if issued.bank_id is not None and parts.banks.is_plaid(issued.bank_id):
        region = call.services.router.region_of(issued.session_id)
        token = await plaid_link_token(
            call.services.router, call.services.custody[region], parts.banks, issued,
            body.user_id, issued.update_connection_id, base,
        )
        plaid = PlaidLinkOut(token.link_token, token.expiration)
    return LinkSessionOut(issued.token, f"{base}/link/{issued.token}", issued.expires_at,
                          issued.session_id, plaid)


class MisdirectedRequest(HttpProblem):
    """Raised when link URLs would be built from a ``Host`` that is not loopback."""

    code = "misdirected_request"


def _for_people(handler: Handler) -> Handler:
    """A person reads these answers: anything unexpected becomes an HTML page too.

    The error is logged (redacted, with the request id) exactly as the API's error
    boundary would log it; the page says only what happened and quotes the request id.
    """

    async def page(call: Call) -> Any:
        locale = negotiate(call.request.headers.get("accept-language"))
        try:
            return await handler(call)
        except BankNotLinkable as exc:
            count(exc.cause, exc.bank_id, call.request.app.state.metrics.registry)
            return error_page(exc, request_id=call.request_id, locale=locale)
        except LinkError as exc:
            return error_page(exc, request_id=call.request_id, locale=locale)
        except (ConnectorError, UnknownBank) as exc:
            log.warning("link: the bank step failed: %s", exc.code)
            return _bank_trouble(call.request_id, locale)
        except Exception:
            log.exception("link: unexpected failure on %s", handler.__name__)
            return message_page(
                "Something went wrong", "The gateway failed to handle this step.",
                status=500, request_id=call.request_id, locale=locale,
            )

    page.__name__ = handler.__name__
    return page


async def show_page(call: Call) -> Response:
    token = call.request.path_params["token"]
    parts = components(call.services)
    base = _base_url(call.request, parts)
    opened = await open_link(call.services.router, call.services.custody, parts.banks, token)
    given = browser.presented(call.request, base)
    fresh = None
    if opened.session.browser_digest is None:  # the first browser to open the link gets it
        fresh = given or browser.new_value()
        if not await browser.bind(call.services.router, opened.region, opened.session.id,
                                  fresh):
            raise LinkOtherBrowser(_OTHER_BROWSER)
    elif not browser.matches(opened.session.browser_digest, given):
        raise LinkOtherBrowser(_OTHER_BROWSER)
    # Relative without public_url: the browser resolves it against the URL it used.
    page = picker_page(
        action=f"{parts.public_url or ''}/link/{token}", form_nonce=opened.form_nonce,
        banks=opened.banks, app_name=opened.app_name,
        update=opened.session.update_connection_id is not None, request_id=call.request_id,
        query=call.request.query_params.get("q", ""), brand=opened.brand,
        locale=_session_locale(opened.session.locale)
        or negotiate(call.request.headers.get("accept-language")),
    )
    if fresh is not None and fresh != given:
        browser.set_cookie(page, base, fresh)
    return page


async def choose_bank(call: Call) -> Response:
    request = call.request
    parts = components(call.services)
    try:
        async with request.form(max_files=0, max_fields=8) as form:
            fields = {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
    except HTTPException:  # Starlette's 400 for a multipart body it cannot parse
        raise LinkFormInvalid("The form could not be read. Please go back and try "
                              "again.") from None
    base = _base_url(request, parts)
    opened = await open_link(
        call.services.router, call.services.custody, parts.banks, request.path_params["token"],
    )
    if not browser.matches(opened.session.browser_digest, browser.presented(request, base)):
        raise LinkOtherBrowser(_OTHER_BROWSER)
    if "cancel" in fields:  # "Cancel and return to the app"
        outcome = await parts.flow.cancel(opened, fields.get("form_nonce", ""),
                                          client_ip=call.client_ip,
                                          request_id=call.request_id)
        return RedirectResponse(outcome.redirect_to, status_code=303, headers=HEADERS)
    url = await parts.flow.authorize(
        opened, fields.get("form_nonce", ""), fields.get("bank_id", ""),
        base + CALLBACK_PATH, client_ip=call.client_ip,
    )
    return RedirectResponse(url, status_code=303, headers=HEADERS)


async def callback(call: Call) -> Response:
    request = call.request
    parts = components(call.services)
    base = _base_url(request, parts)
    outcome = await parts.flow.complete(
        dict(request.query_params), client_ip=call.client_ip, request_id=call.request_id,
        browser=browser.presented(request, base),
    )
    _count_misconfigured(call, outcome)
    if outcome.choice is not None:  # a two-step consent: the user picks accounts first
        return accounts_page(outcome.choice, action=f"{parts.public_url or ''}{ACCOUNTS_PATH}",
                             request_id=call.request_id,
                             locale=negotiate(call.request.headers.get("accept-language")))
    return RedirectResponse(outcome.redirect_to, status_code=303, headers=HEADERS)


def _count_misconfigured(call: Call, outcome: Outcome) -> None:
    """The operator's metric when the bank refused our configuration at the callback."""
    if outcome.misconfigured is not None:
        count(outcome.misconfigured, outcome.misconfigured_bank or "?",
              call.request.app.state.metrics.registry)


async def pick_accounts(call: Call) -> Response:
    request = call.request
    parts = components(call.services)
    try:
        async with request.form(max_files=0, max_fields=60) as form:
            fields = {k: [v for v in form.getlist(k) if isinstance(v, str)]
                      for k in ("state", "account")}
    except HTTPException:
        raise LinkFormInvalid("The form could not be read. Please go back and try "
                              "again.") from None
    _, link = await parts.flow._find((fields.get("state") or [""])[0])
    if not browser.matches(link.browser_digest,
                           browser.presented(request, _base_url(request, parts))):
        raise LinkOtherBrowser(_OTHER_BROWSER)
    url = await choose_accounts(parts.flow, fields, client_ip=call.client_ip,
                                request_id=call.request_id)
    return RedirectResponse(url, status_code=303, headers=HEADERS)


async def callback_form(call: Call) -> Response:
    """The same callback, answered by form post (OIDC Form Post Response Mode): how the
    hybrid flow's code and ID token reach us without a fragment or a script of ours."""
    try:
        async with call.request.form(max_files=0, max_fields=12) as form:
            fields = {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
    except HTTPException:
        raise LinkFormInvalid("Your bank's answer could not be read.") from None
    parts = components(call.services)
    base = _base_url(call.request, parts)
    outcome = await parts.flow.complete(fields, client_ip=call.client_ip,
                                        request_id=call.request_id,
                                        browser=browser.presented_by_post(call.request, base))
    _count_misconfigured(call, outcome)
    if outcome.choice is not None:  # a two-step consent: the user picks accounts first
        return accounts_page(outcome.choice, action=f"{parts.public_url or ''}{ACCOUNTS_PATH}",
                             request_id=call.request_id,
                             locale=negotiate(call.request.headers.get("accept-language")))
    return RedirectResponse(outcome.redirect_to, status_code=303, headers=HEADERS)


def _session_locale(locale: str | None) -> str | None:
    """The language the app asked for (``de-AT`` → ``de``), when the pages speak it."""
    language = (locale or "").split("-")[0].lower()
    return language if language in LOCALES else None


def _bank_trouble(request_id: str, locale: str = "en") -> Response:
    return message_page(
        "Your bank is not reachable", "We could not reach your bank just now.",
        status=502, request_id=request_id,
        advice="Please go back to the app and try again in a few minutes.", locale=locale,
    )


async def stylesheet_file(request: Request) -> Response:
    return Response(stylesheet(), media_type="text/css", headers={
        "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff",
    })


async def bank_logo(request: Request) -> Response:
    banks = components(services_of(request)).banks
    try:
        profile = banks.profile(request.path_params["bank_id"])
    except UnknownBank:
        return Response(status_code=404)
    logo = Path(profile.logo) if profile.logo and "://" not in profile.logo else None
    if logo is None or logo.suffix != ".svg" or not logo.is_file():
        return Response(status_code=404)
    return Response(logo.read_bytes(), media_type="image/svg+xml", headers={
        "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    })


_PAGE = {"token": "A link token (`lnk_<region>_…`) from `POST /v1/link/sessions`."}
#: The statuses of the HTML pages ``_for_people`` answers with: :class:`LinkError`'s
#: (400, 403, 404, 409, 410, 421) and a bank's failure (502).
_PAGE_ERRORS = (400, 403, 404, 409, 410, 421, 502)
#: The authorization response (RFC 6749 §4.1.2, §4.1.2.1; RFC 9207 §2); a bank may add more.
_CALLBACK_QUERY = {
    "state": "The `state` of the authorization request, naming the link session.",
    "code": "The authorization code.",
    "iss": "The issuer of the response (RFC 9207), checked against the bank's.",
    "error": "An OAuth error code instead of a code, e.g. `access_denied`.",
    "error_description": "The bank's free text; never shown or logged.",
}


_STATE = "sta_eu_2mjye2dermnjkuu7wb7biruz2gt5iydzt72rmzx3zdlca4fui5yq"
_PICKER_EXAMPLE = (
    '<!doctype html><html lang="en"><head><title>Connect your bank</title></head><body>'
    '<main><h1>Choose your bank</h1><form method="post"><input type="hidden" '
    'name="form_nonce" value="…"><button name="bank_id" value="sandbox-eu">Sandbox Bank '
    "(EU)</button></form></main></body></html>"
)


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/v1/link/sessions", create_session, "POST", Operation(
            summary="Start a link session for a user", body=CreateLinkSession,
            response=LinkSessionOut, status=201, errors=(404, 421, 422, 502, 503),
            tags=("link",),
            description=LinkSessionOut.__doc__,
        )),
        # Before /link/{token}, which would otherwise take "callback" for a token.
        ApiRoute(CALLBACK_PATH, _for_people(callback), "GET", Operation(
            summary="OAuth redirect URI: the bank sends the user back here",
            response=None, status=303, auth=False, media_type="text/html", tags=("link",),
            errors=_PAGE_ERRORS, query_params=_CALLBACK_QUERY,
            description="Answers with a redirect to the application's redirect URI "
                        "carrying `connection_id` and `outcome`, or an HTML error page.",
        )),
        ApiRoute(ACCOUNTS_PATH, _for_people(pick_accounts), "POST", Operation(
            summary="Two-step consents: the accounts the user chose; answered with a "
                    "redirect to the bank", response=None, status=303, auth=False,
            media_type="text/html", tags=("link",), errors=_PAGE_ERRORS, form={
                "state": "The value the accounts page's form carries.",
                "account": "The position of a chosen account on the page (repeated).",
            }, examples={"request": {"state": _STATE, "account": "0"}},
        )),
        ApiRoute(CALLBACK_PATH, _for_people(callback_form), "POST", Operation(
            summary="OAuth redirect URI, form post response mode (the hybrid flow)",
            response=None, status=303, auth=False, media_type="text/html", tags=("link",),
            errors=_PAGE_ERRORS, form={**_CALLBACK_QUERY, "id_token": (
                "The ID token of a `code id_token` response, checked as a detached "
                "signature (c_hash, s_hash, nonce) before the code is used.")},
            description="As the GET callback, for banks answering by form post.",
            examples={"request": {
                "state": _STATE, "code": "SplxlOBeZQQYbYS6WxSbIA",
                "iss": "https://bank.example", "id_token": "eyJhbGciOiJQUzI1NiJ9.e30.c2ln",
            }},
        )),
        Route("/link/static/link.css", stylesheet_file, methods=["GET"],
              include_in_schema=False),
        Route("/link/banks/{bank_id}/logo", bank_logo, methods=["GET"],
              include_in_schema=False),
        ApiRoute("/link/{token}", _for_people(show_page), "GET", Operation(
            summary="The hosted Link page: the bank picker", response=None,
            auth=False, media_type="text/html", tags=("link",), path_params=_PAGE,
            errors=_PAGE_ERRORS, examples={"200": _PICKER_EXAMPLE}, query_params={
                "q": "Narrows the list to banks whose name, id or country contains "
                     "every word (the page's search form, shown from 7 banks on).",
            },
        )),
        ApiRoute("/link/{token}", _for_people(choose_bank), "POST", Operation(
            summary="Pick a bank; answered with a redirect to the bank", response=None,
            description="A form with `cancel` (the page's \"Cancel and return\" button) "
                        "instead ends the session and redirects to the application's "
                        "redirect URI with `outcome=cancelled` (and the `link.cancelled` "
                        "event).",
            status=303, auth=False, media_type="text/html", tags=("link",),
            path_params=_PAGE, errors=_PAGE_ERRORS, form={
                "form_nonce": "The nonce the page's form carries.",
                "bank_id": "The bank the person picked, one the page offered.",
            }, examples={"request": {"form_nonce": "4f1c0e9a7b2d", "bank_id": "sandbox-eu"}},
        )),
    ]
