"""Drive oidc-provider's development login and consent pages with plain HTTP.

``drive_login`` plays the user's browser: it follows the authorization server's redirects,
fills the login form (any login, any password: devInteractions accept everything), submits
or cancels the consent form, and stops at the first redirect that leaves the server's origin,
which is the redirect to the client's ``redirect_uri``. That URL is returned unrequested, so
the test (or our client) handles the callback itself.

Example::

    callback = await drive_login(http, authorization_url, login="alice")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
    assert params["iss"] == issuer
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx

MAX_STEPS = 12
DEV_PASSWORD = "any-password"  # devInteractions check only that a password was typed


class DriverError(AssertionError):
    """The pages did not lead to a redirect to the client within ``MAX_STEPS`` requests."""


@dataclass
class _Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _PageParser(HTMLParser):
    """Collects forms (action, method, named inputs) and link targets of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            method = attributes.get("method", "get").lower()
            self.forms.append(_Form(action=attributes.get("action", ""), method=method))
        elif tag == "input" and self.forms and "name" in attributes:
            self.forms[-1].fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _parse(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser


def _prompt_form(page: _PageParser, url: str) -> _Form:
    for form in page.forms:
        if form.fields.get("prompt") in {"login", "consent"}:
            return form
    raise DriverError(f"no login or consent form at {url}")


def _cancel_link(page: _PageParser, url: str) -> str:
    for link in page.links:
        if "/abort" in urlsplit(link).path:
            return link
    raise DriverError(f"no cancel link at {url}")


async def drive_login(
    http: httpx.AsyncClient,
    authorization_url: str,
    *,
    login: str,
    consent: bool = True,
) -> str:
    """Walk login and consent; return the callback URL (``code``/``error``, ``state``, ``iss``).

    ``http`` must not follow redirects itself and keeps the server's cookies between calls;
    a second call on the same client finds the login session and skips the login page.
    ``consent=False`` presses "Cancel" on the consent page, so the callback carries
    ``error=access_denied``. Raises :class:`DriverError` on an error page, on an unexpected
    page, or after ``MAX_STEPS`` requests.
    """
    server_origin = _origin(authorization_url)
    request = http.build_request("GET", authorization_url)
    for _ in range(MAX_STEPS):
        response = await http.send(request)
        url = str(response.url)
        if response.is_redirect:
            location = urljoin(url, response.headers["location"])
            if _origin(location) != server_origin:
                return location
            request = http.build_request("GET", location)
            continue
        if response.status_code != httpx.codes.OK:
            raise DriverError(f"{response.status_code} at {url}: {response.text[:500]}")
        page = _parse(response.text)
        form = _prompt_form(page, url)
        if form.fields["prompt"] == "consent" and not consent:
            request = http.build_request("GET", urljoin(url, _cancel_link(page, url)))
            continue
        data = dict(form.fields)
        if data["prompt"] == "login":
            data.update(login=login, password=DEV_PASSWORD)
        request = http.build_request(form.method.upper(), urljoin(url, form.action), data=data)
    raise DriverError(f"no redirect to the client after {MAX_STEPS} requests")
