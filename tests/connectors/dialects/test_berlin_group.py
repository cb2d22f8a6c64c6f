"""Golden tests: Berlin Group NextGenPSD2 v1.3 fixtures in, exact normalized models out."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pytest

from connectors.dialects import BerlinGroupDialect
from connectors.errors import BankProtocolError
from connectors.models import Account, AccountType, Balance, Transaction, TransactionStatus
from tests.connectors.dialects.fakebank import FakeBank, exact

BASE = "https://xs2a.beta-bank.example/psd2"
TOKEN = "bg-access-token-0d41aa"
CONSENT = "CONSENT-7e1c2b"
GIRO = "3dc3d5b3-7023-4848-9853-f5400a64e80f"
SAVINGS = "8e1b6f4c-2a0d-4b1e-9a53-77c0e2f1a9d2"
CARD = "c7f0a1e2-91b4-4f6e-8d3a-0b5e6c7d8e9f"
MULTI = "f00dfeed-0000-4000-8000-000000000001"
BOOKED, PENDING = TransactionStatus.BOOKED, TransactionStatus.PENDING


@pytest.fixture
def bank() -> FakeBank:
    bank = FakeBank("X-Request-ID")
    bank.add(f"{BASE}/v1/accounts", "berlin_group/accounts.json")
    bank.add(f"{BASE}/v1/accounts/{GIRO}/balances", "berlin_group/balances_giro.json")
    bank.add(f"{BASE}/v1/accounts/{CARD}/balances", "berlin_group/balances_card.json")
    page1 = f"{BASE}/v1/accounts/{GIRO}/transactions?bookingStatus=both&dateFrom=2024-03-01"
    bank.add(page1, "berlin_group/transactions_giro_page1.json")
    bank.add(f"{page1}&pageIndex=1", "berlin_group/transactions_giro_page2.json")
    return bank


@pytest.fixture
async def dialect(bank: FakeBank) -> AsyncIterator[BerlinGroupDialect]:
    async with bank.client() as client:
        yield BerlinGroupDialect(client, BASE, TOKEN, {"Consent-ID": CONSENT})


async def test_accounts_map_cash_account_types_and_identifiers(
    dialect: BerlinGroupDialect,
) -> None:
    assert exact(await dialect.accounts()) == exact(
        [
            Account(
                GIRO, "Girokonto", AccountType.CHECKING, "EUR", "••••3000",
                "DE89370400440532013000", "Erika Mustermann",
            ),
            # No name: the product stands in; a BBAN when the bank has no IBAN to give.
            Account(SAVINGS, "Tagesgeld", AccountType.SAVINGS, "EUR", "••••3001", "0532013001"),
            # A card account is only ever identified by its masked PAN.
            Account(
                CARD, "Mastercard Gold", AccountType.CREDIT_CARD, "EUR", "••••3241",
                "525412******3241",
            ),
            # Multi-currency ("XXX") account of an unmapped type, with no name at all.
            Account(
                MULTI, "Account", AccountType.OTHER, "XXX", "••••2051", "DE02120300000000202051"
            ),
        ]
    )  # fmt: skip


async def test_giro_balance_reveals_the_credit_limit_from_the_included_pair(
    dialect: BerlinGroupDialect,
) -> None:
    # closingBooked outranks expected; it only has a referenceDate, so as_of is that
    # day's start. interimAvailable with and without the limit: 2420 - 420 = 2000.
    assert exact(await dialect.balances(GIRO)) == exact(
        [
            Balance(
                GIRO, Decimal("500.00"), Decimal("2420.00"), Decimal("2000.00"), "EUR",
                datetime(2024, 3, 13, tzinfo=UTC),
            )
        ]
    )  # fmt: skip


async def test_card_balance_is_negative_when_owed(dialect: BerlinGroupDialect) -> None:
    assert exact(await dialect.balances(CARD)) == exact(
        [
            Balance(
                CARD, Decimal("-1230.00"), Decimal("3770.00"), None, "EUR",
                datetime(2024, 3, 14, 8, 0, tzinfo=UTC),
            )
        ]
    )  # fmt: skip


GOLDEN_GIRO = [
    Transaction(
        "1234567", GIRO, Decimal("-256.67"), "EUR", date(2024, 3, 1), date(2024, 3, 1), BOOKED,
        "Abschlag Strom März", "Stadtwerke Musterstadt",
    ),
    # No transactionId: entryReference stands in; the unstructured array is joined.
    Transaction(
        "ER-0002", GIRO, Decimal("2500.00"), "EUR", date(2024, 3, 1), date(2024, 2, 29),
        BOOKED, "Gehalt 03/2024", "Arbeitgeber GmbH",
    ),
    # v1.3.0 structured remittance (a plain reference); only an ultimate creditor named.
    Transaction(
        "1234569", GIRO, Decimal("-12.30"), "EUR", date(2024, 3, 2), date(2024, 3, 2), BOOKED,
        "RF18539007547034", "Bäckerei Schmidt",
    ),
    # Pending, with neither id: a stable id from non-PII fields; no booking date yet.
    Transaction(
        "syn-db9dba4adfa25d20eb16091e99d63d09", GIRO, Decimal("-45.00"), "EUR", None,
        date(2024, 3, 5), PENDING, "Kartenzahlung REWE", "REWE Markt",
    ),
    # Page 2 repeats 1234569; it is kept once. v1.3.8 structured remittance object.
    Transaction(
        "1234570", GIRO, Decimal("-7.50"), "EUR", date(2024, 3, 4), date(2024, 3, 4), BOOKED,
        "INV-2024-0042", "Café Einstein", "5814",
    ),
    Transaction(
        "1234571", GIRO, Decimal("-1.00"), "EUR", date(2024, 3, 4), date(2024, 3, 4), BOOKED,
        "Kontoführungsgebühr",
    ),
]  # fmt: skip


async def test_transactions_follow_relative_next_link_and_drop_the_repeat(
    dialect: BerlinGroupDialect, bank: FakeBank
) -> None:
    got = await dialect.transactions(GIRO, since=date(2024, 3, 1))

    assert exact(got) == exact(GOLDEN_GIRO)
    assert [str(r.url) for r in bank.requests] == [
        f"{BASE}/v1/accounts/{GIRO}/transactions?bookingStatus=both&dateFrom=2024-03-01",
        f"{BASE}/v1/accounts/{GIRO}/transactions?bookingStatus=both&dateFrom=2024-03-01"
        "&pageIndex=1",
    ]


async def test_requests_carry_consent_and_a_fresh_request_id(
    dialect: BerlinGroupDialect, bank: FakeBank
) -> None:
    await dialect.transactions(GIRO, since=date(2024, 3, 1))
    await dialect.accounts()

    ids = [r.headers["x-request-id"] for r in bank.requests]
    assert len(set(ids)) == len(ids) == 3
    assert all(uuid.UUID(i).version == 4 for i in ids)
    for request in bank.requests:
        assert request.headers["consent-id"] == CONSENT
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert dialect.last_request_id == ids[-1]


async def test_consent_id_is_required_at_construction() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="Consent-ID"):
            BerlinGroupDialect(client, BASE, TOKEN, {"PSU-IP-Address": "192.0.2.1"})


BEFORE_CARD = [
    Transaction(
        "T-0001", CARD, Decimal("-20.00"), "EUR", date(2024, 3, 8), date(2024, 3, 7), BOOKED,
        "DB Fernverkehr", "Deutsche Bahn", "4112",
    ),
    Transaction(
        "P-0088", CARD, Decimal("-64.00"), "EUR", None, date(2024, 3, 9), PENDING,
        "AIRBNB * HMX2QK", "Airbnb", "7011",
    ),
]  # fmt: skip
AFTER_CARD = [
    BEFORE_CARD[0],
    Transaction(
        "T-0002", CARD, Decimal("-64.00"), "EUR", date(2024, 3, 11), date(2024, 3, 9), BOOKED,
        "AIRBNB * HMX2QK LONDON", "Airbnb", "7011",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fixture", "golden"),
    [("transactions_card_before.json", BEFORE_CARD), ("transactions_card_after.json", AFTER_CARD)],
    ids=["before", "after"],
)
async def test_pending_card_entry_books_under_a_new_id(
    bank: FakeBank, fixture: str, golden: list[Transaction]
) -> None:
    bank.add(f"{BASE}/v1/accounts/{CARD}/transactions", f"berlin_group/{fixture}")
    async with bank.client() as client:
        dialect = BerlinGroupDialect(client, BASE, TOKEN, {"Consent-ID": CONSENT})
        got = await dialect.transactions(CARD, since=None)

    assert exact(got) == exact(golden)
    assert bank.requests[0].url.params.get("dateFrom") is None


async def test_same_id_pending_then_booked_keeps_the_booked_entry(bank: FakeBank) -> None:
    entry = {"transactionId": "X1", "transactionAmount": {"amount": "-5.00", "currency": "EUR"}}
    report = {"booked": [{**entry, "bookingDate": "2024-03-02"}], "pending": [entry]}
    await _assert_report(bank, report, [("X1", BOOKED)])


async def _assert_report(
    bank: FakeBank, report: Mapping[str, object], expected: list[tuple[str, TransactionStatus]]
) -> None:
    body = json.dumps({"transactions": report}).encode()
    bank.route(
        f"{BASE}/v1/accounts/{CARD}/transactions", lambda _: httpx.Response(200, content=body)
    )
    async with bank.client() as client:
        dialect = BerlinGroupDialect(client, BASE, TOKEN, {"Consent-ID": CONSENT})
        got = await dialect.transactions(CARD, since=None)
    assert [(t.bank_transaction_id, t.status) for t in got] == expected


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (12.3, "must be a decimal string"),
        ("1.2e3", "malformed amount"),
        ("NaN", "malformed amount"),
        ("12,30", "malformed amount"),
    ],
)
async def test_malformed_amounts_are_refused(bank: FakeBank, amount: object, message: str) -> None:
    entry = {"transactionId": "X1", "transactionAmount": {"amount": amount, "currency": "EUR"}}
    with pytest.raises(BankProtocolError, match=rf"booked\[0\]\.transactionAmount.*{message}"):
        await _assert_report(bank, {"booked": [entry]}, [])


async def test_download_only_report_is_refused(bank: FakeBank) -> None:
    with pytest.raises(BankProtocolError, match="download-only"):
        await _assert_report(bank, {"_links": {"download": {"href": "/psd2/v1/dl/1"}}}, [])


async def test_report_missing_entirely_is_refused(bank: FakeBank) -> None:
    body = json.dumps({"_links": {"download": {"href": "/psd2/v1/dl/1"}}}).encode()
    bank.route(
        f"{BASE}/v1/accounts/{CARD}/transactions", lambda _: httpx.Response(200, content=body)
    )
    async with bank.client() as client:
        dialect = BerlinGroupDialect(client, BASE, TOKEN, {"Consent-ID": CONSENT})
        with pytest.raises(BankProtocolError, match="download-only"):
            await dialect.transactions(CARD, since=None)


async def test_missing_mandatory_lists_are_refused_not_read_as_empty(bank: FakeBank) -> None:
    bank.route(f"{BASE}/v1/accounts", lambda _: httpx.Response(200, json={}))
    bank.route(f"{BASE}/v1/accounts/{CARD}/balances", lambda _: httpx.Response(200, json={}))
    async with bank.client() as client:
        dialect = BerlinGroupDialect(client, BASE, TOKEN, {"Consent-ID": CONSENT})
        with pytest.raises(BankProtocolError, match="accounts: expected a JSON array"):
            await dialect.accounts()
        with pytest.raises(BankProtocolError, match="balances: expected a JSON array"):
            await dialect.balances(CARD)
