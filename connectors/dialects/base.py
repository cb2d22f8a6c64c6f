"""The contract every API dialect meets, and the HTTP plumbing they share.

A dialect turns one family of bank APIs (UK Open Banking, Berlin Group NextGenPSD2…) into
:mod:`connectors.models` values. Shared here, so each dialect only maps JSON:

- one GET with a fresh request id, the profile's extra headers and the access token,
  presented by an ``httpx.Auth`` (:class:`BearerAuth` by default; a sender-constrained
  bank's, e.g. :class:`~connectors.oauth.rfc9449.DPoPAuth`, passed as ``auth=``), the
  one hook through which a request's credentials are added;
- error mapping (timeouts, 429 and 5xx but 501 → :class:`BankUnavailable` with
  ``Retry-After``; 403 → :class:`ResourceNotPermitted`, 404 and 501 →
  :class:`ResourceNotOffered`; other statuses and malformed JSON →
  :class:`BankProtocolError`), messages that name the method, path, status and request
  id, never a header or a body;
- ``last_request_id`` after every call, answered or failed (see :class:`Dialect`);
- paging along the bank's next links, bounded in count and pinned to the base URL's origin:
  a next link elsewhere would carry the user's bearer token to another host.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import ClassVar, Protocol
from urllib.parse import quote

import httpx

from connectors.errors import (
    BankProtocolError,
    BankUnavailable,
    ResourceNotOffered,
    ResourceNotPermitted,
)
from connectors.models import Account, Balance, Transaction

from .parsing import JsonObject

logger = logging.getLogger("connectors.dialects")

DEFAULT_MAX_PAGES = 50

# RFC 6750 §2.1 b64token. Checked up front: an HTTP library refusing a malformed header
# value quotes that value in its own error, and the value here is the token.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MAX_REQUEST_ID = 64


class Dialect(Protocol):
    """A bank API family, bound to one connection's access token.

    Constructed per connection with an injected client (so tests swap the transport and
    the service shares one connection pool), the API base URL from the bank profile, the
    access token (never logged, never in an error message) and the profile's extra
    headers; ``required_headers`` names those the dialect cannot work without, so a
    profile loader can check them at start-up. Each call may raise
    :class:`~connectors.errors.BankUnavailable` (retry later, after ``retry_after``) or
    :class:`~connectors.errors.BankProtocolError` (do not retry blindly; a 401, the token
    refused, is one of these too). Two subclasses concern one resource of one account and
    let a sync go on with the others: :class:`~connectors.errors.ResourceNotPermitted`
    (403: the consent lacks the permission) and
    :class:`~connectors.errors.ResourceNotOffered` (404 or 501: the bank has no such
    resource). Example::

        dialect = get_dialect(profile.dialect)(client, profile.api_base, token, headers)
        accounts = await dialect.accounts()
        entries = await dialect.transactions(accounts[0].bank_account_id, since=cursor_day)

    **The bank's request id, per call.** Every method sets ``last_request_id`` before it
    returns *or raises*: the id the bank echoed in ``request_id_header`` (UK Open Banking
    ``x-fapi-interaction-id``, Berlin Group ``X-Request-ID``), else the one we sent, else
    ``None`` when nothing was sent. For a paged listing it is the last page's. The sync
    job reads it after each resource call and keeps it with that resource's outcome
    (:class:`aggregator.sync.snapshot.ResourceRead`), so a dialect that adds headers to
    its calls (a ``Consent-ID``, a DPoP proof) only has to keep setting this attribute;
    nothing else in the per-resource reading depends on the dialect.
    """

    name: ClassVar[str]
    required_headers: ClassVar[frozenset[str]]
    last_request_id: str | None  # the bank's id for the last call, for support tickets

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        access_token: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        auth: httpx.Auth | None = None,
    ) -> None: ...

    async def accounts(self) -> list[Account]:
        """Every account the consent covers."""
        ...

    async def balances(self, account_id: str) -> list[Balance]:
        """The account's balance, one per currency it is held in."""
        ...

    async def transactions(self, account_id: str, since: date | None) -> list[Transaction]:
        """Every entry booked (or pending) on or after ``since``, de-duplicated by bank id."""
        ...


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Read ``Retry-After`` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value) if len(value) <= 9 else None  # ~31 years is already nonsense
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, url.port or default)


def _reject_constant(name: str) -> object:
    raise ValueError(f"non-finite JSON constant {name}")


@contextlib.contextmanager
def map_httpx_errors(where: str) -> Iterator[None]:
    """Turn httpx's transport failures into connector errors, once, at the boundary."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise BankUnavailable(f"{where}: the bank did not answer in time") from exc
    except (httpx.NetworkError, httpx.ProxyError) as exc:
        raise BankUnavailable(f"{where}: could not reach the bank ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise BankProtocolError(f"{where}: broken HTTP exchange ({type(exc).__name__})") from exc


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer`` (RFC 6750 §2.1): the default credential of a dialect.

    The hook for sender-constrained tokens: a dialect call's credentials come from one
    ``httpx.Auth``, so DPoP (RFC 9449) or any other scheme replaces this class without
    touching the headers the dialects and profiles add.
    """

    def __init__(self, access_token: str) -> None:
        if not _BEARER_TOKEN.fullmatch(access_token):
            raise ValueError("access_token is not an RFC 6750 bearer token")
        self._authorization = f"Bearer {access_token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._authorization
        yield request

    def __repr__(self) -> str:
        return "BearerAuth('***')"


class HttpDialect(abc.ABC):
    """Shared GET, error mapping and paging; subclasses set the class attributes and map JSON.

    ``max_pages`` bounds one listing: a bank whose next links never end (or loop) costs at
    most that many requests and then fails loudly rather than returning a silent subset.
    """

    name: ClassVar[str]
    request_id_header: ClassVar[str]
    required_headers: ClassVar[frozenset[str]] = frozenset()
    #: An empty ``access_token`` means "send no Authorization": an API whose consent
    #: alone authorises the call (Berlin Group's redirect SCA approach).
    bearer_optional: ClassVar[bool] = False

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        access_token: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        max_pages: int = DEFAULT_MAX_PAGES,
        auth: httpx.Auth | None = None,
    ) -> None:
        base = httpx.URL(base_url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("base_url must be an absolute http(s) URL")
        headers = dict(extra_headers or {})
        given = {key.lower() for key in headers}
        reserved = {"authorization", self.request_id_header.lower()} & given
        if reserved:
            raise ValueError(f"extra_headers must not set {sorted(reserved)}")
        missing = {key for key in self.required_headers if key.lower() not in given}
        if missing:
            raise ValueError(f"{self.name} dialect needs headers {sorted(missing)}")
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        self._client = client
        self._base = base
        self._headers = headers
        # The redirect SCA approach of Berlin Group: the consent alone authorises a call.
        no_token = self.bearer_optional and access_token == "" and auth is None
        self._auth: httpx.Auth | None = None if no_token else (
            auth if auth is not None else BearerAuth(access_token))
        self.max_pages = max_pages
        self.last_request_id: str | None = None

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"{type(self).__name__}(base_url={str(self._base)!r})"

    @abc.abstractmethod
    async def accounts(self) -> list[Account]: ...

    @abc.abstractmethod
    async def balances(self, account_id: str) -> list[Balance]: ...

    @abc.abstractmethod
    async def transactions(self, account_id: str, since: date | None) -> list[Transaction]: ...

    def _url(self, *segments: str) -> str:
        """Join path segments under the base URL, each percent-encoded whole.

        An account id is bank data: quoting it keeps ``../`` or ``?`` inside it from
        steering the request (and the token) to another resource.
        """
        return "/".join([str(self._base), *(quote(s, safe="") for s in segments)])

    async def _get_json(self, url: str, params: Mapping[str, str] | None = None) -> JsonObject:
        request_id = str(uuid.uuid4())
        headers = {
            **self._headers,
            "Accept": "application/json",
            self.request_id_header: request_id,
        }
        path = httpx.URL(url).path
        self.last_request_id = request_id  # until the bank echoes its own (contract above)
        with map_httpx_errors(f"GET {path}"):
            # Explicit even if the shared client follows redirects: a 3xx from the bank
            # must not carry the bearer token to wherever it points.
            response = await self._client.get(
                url, params=params, headers=headers, auth=self._auth, follow_redirects=False
            )
        echoed = response.headers.get(self.request_id_header, "")[:_MAX_REQUEST_ID]
        self.last_request_id = echoed or request_id
        logger.debug(
            "%s GET %s -> %s (%s %s)",
            self.name,
            path,
            response.status_code,
            self.request_id_header,
            self.last_request_id,
        )
        where = (
            f"GET {path}: HTTP {response.status_code} "
            f"({self.request_id_header} {self.last_request_id})"
        )
        self._raise_for_status(response, where)
        try:
            document = json.loads(
                response.content, parse_float=Decimal, parse_constant=_reject_constant
            )
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise BankProtocolError(f"{where}: body is not valid JSON") from exc
        if not isinstance(document, dict):
            raise BankProtocolError(f"{where}: body is not a JSON object")
        return document

    @staticmethod
    def _raise_for_status(response: httpx.Response, where: str) -> None:
        status = response.status_code
        if status == 501:  # RFC 9110 §15.6.2: not a failure that a retry would cure
            raise ResourceNotOffered(f"{where}: the bank does not offer this resource")
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
            raise BankUnavailable(
                f"{where}: the bank is failing or asks us to back off", retry_after
            )
        if status == 401:
            raise BankProtocolError(f"{where}: the bank refused the access token")
        if status == 403:
            raise ResourceNotPermitted(f"{where}: the consent does not permit this resource")
        if status == 404:
            raise ResourceNotOffered(f"{where}: the bank does not offer this resource")
        if not 200 <= status < 300:
            raise BankProtocolError(f"{where}: unexpected status")

    async def _pages(
        self,
        url: str,
        params: Mapping[str, str] | None,
        next_link: Callable[[JsonObject], str | None],
    ) -> AsyncIterator[JsonObject]:
        """Yield each page of a listing, following ``next_link(page)`` until it is ``None``.

        A relative next link resolves against the page it came from. The first request
        carries ``params``; next links carry their own query.
        """
        seen: set[str] = set()
        current = httpx.URL(url)
        for _ in range(self.max_pages):
            seen.add(str(current.copy_merge_params(params or {})))
            page = await self._get_json(str(current), params)
            yield page
            link = next_link(page)
            if link is None:
                return
            following = current.join(link)
            if _origin(following) != _origin(self._base):
                raise BankProtocolError(
                    f"GET {current.path}: next link leaves the bank's origin; refused "
                    "so the access token is not sent elsewhere"
                )
            if str(following) in seen:
                raise BankProtocolError(f"GET {current.path}: next link loops to a seen page")
            current, params = following, None
        raise BankProtocolError(
            f"GET {httpx.URL(url).path}: more than {self.max_pages} pages; refusing a partial list"
        )
