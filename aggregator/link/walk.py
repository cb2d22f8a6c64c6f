"""Walking the Link flow as a person would, with plain HTTP and the pages' real forms.

Used by ``aggregator demo --headless`` and the end-to-end tests: every step reads the
HTML it was served, finds the form a person would fill in, and submits exactly what a
browser would (hidden fields included, one submit button's name and value), following
redirects one at a time so each hop can be shown and checked. No browser, no script,
nothing specific to the gateway's or the bank's markup beyond field names a person reads
as labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

MAX_HOPS = 12


@dataclass
class Form:
    """One ``<form>``: where it goes, its fields, and its named submit buttons."""

    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    radios: dict[str, list[str]] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
            return
        if not self.forms:
            return
        form = self.forms[-1]
        name = a.get("name", "")
        kind = a.get("type", "text" if tag == "input" else "submit").lower()
        if tag == "button" and name:
            form.buttons.append((name, a.get("value", "")))
        elif tag == "input" and name:
            form.inputs.append(name)
            if kind == "radio":
                form.radios.setdefault(name, []).append(a.get("value", "on"))
                if "checked" in a:
                    form.fields[name] = a.get("value", "on")
            elif kind == "submit":
                form.buttons.append((name, a.get("value", "")))
            else:
                form.fields[name] = a.get("value", "")


def forms_of(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


async def submit(
    http: httpx.AsyncClient, page: httpx.Response, values: Mapping[str, str],
    *, button: tuple[str, str] | None = None,
) -> httpx.Response:
    """Fill the page's only ``POST`` form with ``values`` and submit it, not following
    redirects (a page may also carry a ``GET`` search form)."""
    forms = [f for f in forms_of(page.text) if f.method == "post"]
    if len(forms) != 1:
        raise AssertionError(f"expected one form on {page.url.path}, found {len(forms)}")
    form = forms[0]
    data = {**form.fields, **values}
    for name in values:
        if name not in form.inputs:
            raise AssertionError(f"the form on {page.url.path} has no field {name!r}")
    if button is not None:
        if button not in form.buttons:
            raise AssertionError(f"the form on {page.url.path} has no button {button!r}")
        data[button[0]] = button[1]
    target = urljoin(str(page.url), form.action or str(page.url))
    return await http.request(form.method.upper(), target, data=data, follow_redirects=False)


@dataclass
class Walk:
    """Every hop of one walk, for showing and checking: (method, URL, status).

    ``landed`` is the app's redirect URI with its query when the walk was told to stop
    there (the app need not be running); ``final`` is the last page actually fetched.
    """

    stop_at: str | None = None
    hops: list[tuple[str, str, int]] = field(default_factory=list)
    final: httpx.Response | None = None
    landed: str | None = None
    #: The body of every page the walk stopped at (not the redirects), in order.
    pages: list[str] = field(default_factory=list)

    @property
    def landed_query(self) -> dict[str, str]:
        url = self.landed or (str(self.final.url) if self.final is not None else "")
        return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def follow(http: httpx.AsyncClient, response: httpx.Response, walk: Walk) -> httpx.Response:
    """Follow redirects one hop at a time (GET after 303), recording each."""
    for _ in range(MAX_HOPS):
        walk.hops.append((response.request.method, str(response.request.url),
                          response.status_code))
        if response.status_code not in (301, 302, 303, 307, 308):
            walk.pages.append(response.text)
            return response
        target = urljoin(str(response.url), response.headers["location"])
        if walk.stop_at is not None and target.startswith(walk.stop_at):
            walk.landed = target
            return response
        response = await http.get(target, follow_redirects=False)
    raise AssertionError(f"more than {MAX_HOPS} redirects")


async def link_as_person(
    http: httpx.AsyncClient, link_url: str, *, username: str, password: str,
    bank_id: str | None = None, decision: str = "approve", stop_at: str | None = None,
) -> Walk:
    """Open the Link page, pick a bank, sign in at the bank, decide, come back.

    ``stop_at`` (the app's redirect URI) ends the walk at the redirect there, unfetched.
    """
    walk = Walk(stop_at)
    page = await follow(http, await http.get(link_url, follow_redirects=False), walk)
    picker = forms_of(page.text)
    if page.status_code != 200 or not picker:
        walk.final = page
        return walk
    choice = bank_id or (picker[-1].radios.get("bank_id") or [""])[0]
    steps: list[tuple[dict[str, str], tuple[str, str] | None]] = [
        ({"bank_id": choice}, None),
        ({"username": username, "password": password}, None),  # the bank's sign-in form
        ({}, ("decision", decision)),  # the bank's consent form
    ]
    for values, button in steps:
        if walk.landed is not None or page.status_code != 200 or not forms_of(page.text):
            break
        page = await follow(http, await submit(http, page, values, button=button), walk)
    walk.final = page
    return walk
