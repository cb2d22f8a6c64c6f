"""What every dialect inherits from ``connectors/dialects/base.py``, proven on each of them:
error mapping, Retry-After, bounded same-origin paging, and no token in errors or logs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from connectors.dialects import (
    DIALECTS,
    BerlinGroupDialect,
    Dialect,
    HttpDialect,
    ObieDialect,
    get_dialect,
    parse_retry_after,
)
from connectors.errors import (
    BankProtocolError,
    BankUnavailable,
    ConnectorError,
    ResourceNotOffered,
    ResourceNotPermitted,
)
from tests.connectors.dialects.fakebank import FakeBank

TOKEN = "tok-NEVER-LOG-9f8e7d6c5b4a"


@dataclass(frozen=True)
class Case:
    """One dialect as these tests drive it: where its listings live and how it pages."""

    cls: type[HttpDialect]
    base: str
    accounts_path: str
    headers: dict[str, str]
    page: Callable[[str | None], dict[str, object]]

    @property
    def transactions_url(self) -> str:
        return f"{self.base}{self.accounts_path}/acc-1/transactions"


CASES = [
    Case(
        ObieDialect,
        "https://ob.alpha-bank.example/open-banking/v3.1/aisp",
        "/accounts",
        {},
        lambda nxt: {"Data": {"Transaction": []}, "Links": {"Next": nxt} if nxt else {}},
    ),
    Case(
        BerlinGroupDialect,
        "https://xs2a.beta-bank.example/psd2",
        "/v1/accounts",
        {"Consent-ID": "CONSENT-1"},
        lambda nxt: {
            "transactions": {"booked": [], "_links": {"next": {"href": nxt}} if nxt else {}}
        },
    ),
]
each_dialect = pytest.mark.parametrize("case", CASES, ids=[c.cls.name for c in CASES])


async def _accounts_with(case: Case, responder: Callable[[httpx.Request], httpx.Response]) -> None:
    bank = FakeBank(case.cls.request_id_header)
    bank.route(case.base + case.accounts_path, responder)
    async with bank.client() as client:
        await case.cls(client, case.base, TOKEN, case.headers).accounts()


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def responder(request: httpx.Request) -> httpx.Response:
        raise exc

    return responder


def _status(code: int, headers: dict[str, str] | None = None) -> Callable[..., httpx.Response]:
    return lambda _: httpx.Response(code, json={"Code": "x", "token": TOKEN}, headers=headers)


def _body(content: bytes) -> Callable[..., httpx.Response]:
    return lambda _: httpx.Response(200, content=content)


FAILURES: dict[str, tuple[Callable[..., httpx.Response], type[ConnectorError], str]] = {
    "429": (_status(429, {"Retry-After": "120"}), BankUnavailable, "HTTP 429"),
    "503": (_status(503), BankUnavailable, "HTTP 503"),
    "500": (_status(500), BankUnavailable, "HTTP 500"),
    "timeout": (_raise(httpx.ReadTimeout("timed out")), BankUnavailable, "in time"),
    "refused": (_raise(httpx.ConnectError("refused")), BankUnavailable, "ConnectError"),
    "broken": (_raise(httpx.RemoteProtocolError("x")), BankProtocolError, "broken HTTP"),
    "401": (_status(401), BankProtocolError, "HTTP 401.*refused the access token"),
    "403": (_status(403), ResourceNotPermitted, "HTTP 403.*does not permit"),
    "404": (_status(404), ResourceNotOffered, "HTTP 404.*does not offer"),
    "501": (_status(501), ResourceNotOffered, "HTTP 501.*does not offer"),
    "418": (_status(418), BankProtocolError, "HTTP 418.*unexpected status"),
    "302": (_status(302, {"Location": "https://evil.example/"}), BankProtocolError, "HTTP 302"),
    "not-json": (_body(b"<html>oops</html>"), BankProtocolError, "HTTP 200.*not valid JSON"),
    "not-utf8": (_body(b'{"a": "\xff"}'), BankProtocolError, "not valid JSON"),
    "array": (_body(b"[]"), BankProtocolError, "not a JSON object"),
    "nan": (_body(b'{"a": NaN}'), BankProtocolError, "not valid JSON"),
    "empty": (_body(b""), BankProtocolError, "not valid JSON"),
}


@each_dialect
@pytest.mark.parametrize("failure", list(FAILURES))
async def test_failures_map_to_connector_errors_without_the_token(
    case: Case, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    responder, error, message = FAILURES[failure]
    caplog.set_level(logging.DEBUG)

    with pytest.raises(error, match=message) as info:
        await _accounts_with(case, responder)

    chain: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert all(TOKEN not in f"{e}{e!r}{e.args}" for e in chain)
    assert TOKEN not in caplog.text
    assert case.cls.name in caplog.text or failure in ("timeout", "refused", "broken")


@each_dialect
async def test_retry_after_seconds_is_reported(case: Case) -> None:
    with pytest.raises(BankUnavailable) as info:
        await _accounts_with(case, _status(429, {"Retry-After": "120"}))
    assert info.value.retry_after == 120.0


@each_dialect
async def test_retry_after_http_date_is_converted_to_seconds(case: Case) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    with pytest.raises(BankUnavailable) as info:
        await _accounts_with(case, _status(503, {"Retry-After": when}))
    assert info.value.retry_after is not None
    assert 80 <= info.value.retry_after <= 90


@each_dialect
async def test_unavailable_without_retry_after_leaves_it_unknown(case: Case) -> None:
    with pytest.raises(BankUnavailable) as info:
        await _accounts_with(case, _status(503))
    assert info.value.retry_after is None


@each_dialect
async def test_error_names_the_request_id_for_support(case: Case) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, headers={case.cls.request_id_header: "bank-echo-42"})

    with pytest.raises(BankUnavailable, match="bank-echo-42"):
        await _accounts_with(case, answer)


@each_dialect
@pytest.mark.parametrize(("status", "echo"), [(403, "bank-403"), (404, None), (200, "ok-1")])
async def test_last_request_id_is_set_for_a_failed_call_too(
    case: Case, status: int, echo: str | None
) -> None:
    """The contract in connectors/dialects/base.py: the sync keeps it per resource."""
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers[case.cls.request_id_header])
        headers = {case.cls.request_id_header: echo} if echo else {}
        return httpx.Response(status, headers=headers, json={"Data": {"Account": []}})

    bank = FakeBank(case.cls.request_id_header)
    bank.route(case.base + case.accounts_path, answer)
    async with bank.client() as client:
        dialect = case.cls(client, case.base, TOKEN, case.headers)
        with contextlib.suppress(ConnectorError):
            await dialect.accounts()
    assert dialect.last_request_id == (echo or sent[-1])


NOW = datetime(2024, 3, 14, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        (" 30 ", 30.0),
        ("Thu, 14 Mar 2024 12:02:00 GMT", 120.0),
        ("Thu, 14 Mar 2024 11:00:00 GMT", 0.0),  # already past: retry now
        ("Thursday, 14-Mar-24 12:00:10 GMT", 10.0),  # obsolete RFC 850 form
        ("soon", None),
        ("-5", None),
        ("9" * 400, None),  # float() would make it infinite
        ("1.5", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def _pager(case: Case, next_for: Callable[[int], str | None]) -> FakeBank:
    """A bank whose transaction page ``n`` (query ``p=n``) links to ``next_for(n)``."""
    bank = FakeBank(case.cls.request_id_header)

    def answer(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("p", "0"))
        return httpx.Response(200, json=case.page(next_for(n)))

    bank.route(case.transactions_url, answer)
    return bank


async def _transactions(case: Case, bank: FakeBank, max_pages: int = 5) -> None:
    async with bank.client() as client:
        dialect = case.cls(client, case.base, TOKEN, case.headers, max_pages=max_pages)
        await dialect.transactions("acc-1", since=date(2024, 3, 1))


@each_dialect
async def test_paging_stops_at_the_page_cap(case: Case) -> None:
    bank = _pager(case, lambda n: f"{case.transactions_url}?p={n + 1}")

    with pytest.raises(BankProtocolError, match="more than 3 pages"):
        await _transactions(case, bank, max_pages=3)
    assert len(bank.requests) == 3


@each_dialect
async def test_paging_up_to_the_cap_succeeds(case: Case) -> None:
    bank = _pager(case, lambda n: f"{case.transactions_url}?p={n + 1}" if n < 2 else None)

    await _transactions(case, bank, max_pages=3)
    assert len(bank.requests) == 3


@each_dialect
@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://evil.example/steal?p=1",
        "//evil.example/steal?p=1",  # scheme-relative
        "http://{host}/x?p=1",  # downgrade to cleartext
        "https://{host}:8443/x?p=1",  # another port is another origin
        "https://{host}.evil.example/x?p=1",
    ],
)
async def test_next_link_to_another_origin_is_refused(case: Case, elsewhere: str) -> None:
    link = elsewhere.format(host=httpx.URL(case.base).host)
    bank = _pager(case, lambda n: link)

    with pytest.raises(BankProtocolError, match="leaves the bank's origin"):
        await _transactions(case, bank)
    assert [r.url.host for r in bank.requests] == [httpx.URL(case.base).host]


@each_dialect
async def test_next_link_back_to_a_seen_page_is_refused(case: Case) -> None:
    bank = _pager(case, lambda n: f"{case.transactions_url}?p=1")

    with pytest.raises(BankProtocolError, match="loops"):
        await _transactions(case, bank)
    assert len(bank.requests) == 2


@each_dialect
async def test_the_token_stays_out_of_repr_and_debug_logs(
    case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bank = _pager(case, lambda n: None)
    async with bank.client() as client:
        dialect = case.cls(client, case.base, TOKEN, case.headers)
        await dialect.transactions("acc-1", since=None)

    assert TOKEN not in repr(dialect)
    assert f"GET {httpx.URL(case.transactions_url).path} -> 200" in caplog.text
    assert TOKEN not in caplog.text


@each_dialect
@pytest.mark.parametrize("header", ["Authorization", "authorization"])
async def test_extra_headers_cannot_replace_the_authorization(case: Case, header: str) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="authorization"):
            case.cls(client, case.base, TOKEN, {**case.headers, header: "Basic x"})


@pytest.mark.parametrize("token", ["", "abc def", "abc\r\nX-Evil: 1", "t\u00f6ken", "=abc"])
async def test_malformed_token_is_refused_without_echoing_it(token: str) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="bearer token") as info:
            ObieDialect(client, "https://bank.example", token)
    assert token not in str(info.value) or not token


@pytest.mark.parametrize("base", ["ftp://bank.example/x", "/relative/only", "https://"])
async def test_base_url_must_be_absolute_http(base: str) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="base_url"):
            ObieDialect(client, base, TOKEN)


def test_registry_names_the_dialects_profiles_may_use() -> None:
    expected: dict[str, type[Dialect]] = {"obie": ObieDialect, "berlin_group": BerlinGroupDialect}
    assert dict(DIALECTS) == expected
    assert get_dialect("berlin_group") is BerlinGroupDialect
    with pytest.raises(KeyError, match="known: \\['berlin_group', 'obie'\\]"):
        get_dialect("stet")


@each_dialect
async def test_redirects_are_not_followed_even_by_a_following_client(case: Case) -> None:
    bank = FakeBank(case.cls.request_id_header)
    bank.route(case.base + case.accounts_path, _status(302, {"Location": "https://evil.example/"}))
    transport = httpx.MockTransport(bank.handler)
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        with pytest.raises(BankProtocolError, match="HTTP 302"):
            await case.cls(client, case.base, TOKEN, case.headers).accounts()
    assert [r.url.host for r in bank.requests] == [httpx.URL(case.base).host]
