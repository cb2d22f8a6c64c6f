"""Golden tests: OBIE v3.1 fixtures in, exact normalized models out."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pytest

from connectors.dialects import ObieDialect
from connectors.dialects.parsing import JsonObject, opt_obj, opt_text
from connectors.errors import BankProtocolError
from connectors.models import Account, AccountType, Balance, Transaction, TransactionStatus
from tests.connectors.dialects.fakebank import FakeBank, exact, fixture_bytes

BASE = "https://ob.alpha-bank.example/open-banking/v3.1/aisp"
TOKEN = "obie-access-token-5c2f9e"
FINANCIAL_ID = "0015800001041RHAAY"
BOOKED, PENDING = TransactionStatus.BOOKED, TransactionStatus.PENDING


@pytest.fixture
def bank() -> FakeBank:
    bank = FakeBank("x-fapi-interaction-id")
    bank.add(f"{BASE}/accounts", "obie/accounts.json")
    for account in ("22289", "31820", "44011"):
        bank.add(f"{BASE}/accounts/{account}/balances", f"obie/balances_{account}.json")
    page1 = f"{BASE}/accounts/22289/transactions?fromBookingDateTime=2024-03-01T00:00:00"
    bank.add(page1, "obie/transactions_22289_page1.json")
    bank.add(f"{page1}&page=2", "obie/transactions_22289_page2.json")
    return bank


@pytest.fixture
async def dialect(bank: FakeBank) -> AsyncIterator[ObieDialect]:
    async with bank.client() as client:
        yield ObieDialect(client, BASE, TOKEN, {"x-fapi-financial-id": FINANCIAL_ID})


async def test_accounts_map_subtypes_identifiers_and_holders(dialect: ObieDialect) -> None:
    assert exact(await dialect.accounts()) == exact(
        [
            Account(
                "22289", "Bills", AccountType.CHECKING, "GBP", "••••3345", "80200110203345",
                "Mr Kevin Example",
            ),
            Account(
                "31820", "Easy Access Saver", AccountType.SAVINGS, "GBP", "••••6819",
                "GB29NWBK60161331926819", "Mrs Jo Example",
            ),
            # A full PAN is masked before it reaches the model; no Name means no holder.
            Account(
                "44011", "Travel card", AccountType.CREDIT_CARD, "GBP", "••••0005", "••••0005",
                None,
            ),
            # ReadAccountsBasic: no Account[] at all, no Nickname: named after the subtype.
            Account("50007", "Loan", AccountType.LOAN, "GBP", None, None, None),
        ]
    )  # fmt: skip


async def test_current_account_balance_picks_interim_types_and_included_credit_line(
    dialect: ObieDialect,
) -> None:
    assert exact(await dialect.balances("22289")) == exact(
        [
            Balance(
                "22289", Decimal("1230.00"), Decimal("1730.00"), Decimal("500.00"), "GBP",
                datetime(2024, 3, 14, 9, 30, tzinfo=UTC),
            )
        ]
    )  # fmt: skip


async def test_credit_card_balance_is_negative_when_owed(dialect: ObieDialect) -> None:
    # Debit 1230 owed; available 3770 of a 5000 line; the excluded emergency line is ignored;
    # the +01:00 closing time becomes the previous day in UTC.
    assert exact(await dialect.balances("44011")) == exact(
        [
            Balance(
                "44011", Decimal("-1230.00"), Decimal("3770.00"), Decimal("5000.00"), "GBP",
                datetime(2024, 3, 13, 23, 0, tzinfo=UTC),
            )
        ]
    )  # fmt: skip


async def test_balances_split_by_currency_and_fall_back_to_closing_booked(
    dialect: ObieDialect,
) -> None:
    assert exact(await dialect.balances("31820")) == exact(
        [
            Balance(
                "31820", Decimal("15000"), None, None, "GBP",
                datetime(2024, 3, 13, 23, 59, 59, tzinfo=UTC),
            ),
            # "0.00" with a Debit indicator is zero, not negative zero.
            Balance(
                "31820", Decimal("0.00"), None, None, "EUR",
                datetime(2024, 3, 14, 6, 0, tzinfo=UTC),
            ),
        ]
    )  # fmt: skip


GOLDEN_22289 = [
    Transaction(
        "TXN-1001", "22289", Decimal("-42.50"), "GBP", date(2024, 3, 1), date(2024, 3, 1),
        BOOKED, "TESCO STORES 2231", "Tesco Stores", "5411",
    ),
    # 00:30+01:00 on 1 March is 23:30 UTC on the leap day.
    Transaction(
        "TXN-1002", "22289", Decimal("2500.00"), "GBP", date(2024, 2, 29), date(2024, 3, 1),
        BOOKED, "SALARY MAR", "ACME PAYROLL LTD",
    ),
    # No TransactionInformation; 23:45-05:00 on 2 March is 3 March in UTC.
    Transaction(
        "TXN-1003", "22289", Decimal("-9.99"), "GBP", date(2024, 3, 3), None, BOOKED, "",
        "STREAMFLIX LTD",
    ),
    Transaction(
        "TXN-1004", "22289", Decimal("-0.5"), "GBP", date(2024, 3, 4), date(2024, 3, 5), BOOKED,
        "ATM FEE",
    ),
    Transaction(
        "PND-2001", "22289", Decimal("-18.20"), "GBP", date(2024, 3, 5), None, PENDING,
        "PRET A MANGER LONDON", "Pret A Manger", "5814",
    ),
    # No TransactionId: a stable id derived from the entry's non-PII fields.
    Transaction(
        "syn-8a0c12836dedd25e0b30604b746cfbf0", "22289", Decimal("7.25"), "GBP",
        date(2024, 3, 5), None, BOOKED, "REFUND",
    ),
]  # fmt: skip


async def test_transactions_follow_next_link_and_drop_the_repeated_entry(
    dialect: ObieDialect, bank: FakeBank
) -> None:
    got = await dialect.transactions("22289", since=date(2024, 3, 1))

    assert exact(got) == exact(GOLDEN_22289)
    assert [r.url.params.get("page") for r in bank.requests] == [None, "2"]


async def test_requests_carry_fapi_headers_and_a_fresh_interaction_id(
    dialect: ObieDialect, bank: FakeBank
) -> None:
    await dialect.transactions("22289", since=date(2024, 3, 1))
    await dialect.accounts()

    first = bank.requests[0]
    assert first.url.params["fromBookingDateTime"] == "2024-03-01T00:00:00"
    ids = [r.headers["x-fapi-interaction-id"] for r in bank.requests]
    assert len(set(ids)) == len(ids) == 3
    assert all(uuid.UUID(i).version == 4 for i in ids)
    for request in bank.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["x-fapi-financial-id"] == FINANCIAL_ID
        assert request.headers["accept"] == "application/json"
    assert dialect.last_request_id == ids[-1]


async def test_interaction_id_the_bank_answers_is_recorded(bank: FakeBank) -> None:
    body = fixture_bytes("obie/accounts.json")
    bank.route(
        f"{BASE}/accounts",
        lambda _: httpx.Response(200, content=body, headers={"x-fapi-interaction-id": "bank-7"}),
    )
    async with bank.client() as client:
        dialect = ObieDialect(client, BASE, TOKEN)
        await dialect.accounts()

    assert dialect.last_request_id == "bank-7"


async def test_without_since_no_booking_filter_is_sent(bank: FakeBank) -> None:
    bank.add(f"{BASE}/accounts/44011/transactions", "obie/transactions_44011_before.json")
    async with bank.client() as client:
        await ObieDialect(client, BASE, TOKEN).transactions("44011", since=None)

    assert bank.requests[0].url.query == b""


BEFORE_44011 = [
    Transaction(
        "TXN-7000", "44011", Decimal("300.00"), "GBP", date(2024, 3, 8), date(2024, 3, 8),
        BOOKED, "PAYMENT RECEIVED - THANK YOU",
    ),
    Transaction(
        "PND-7001", "44011", Decimal("-64.00"), "GBP", date(2024, 3, 10), None, PENDING,
        "AIRBNB * HMX2QK", "Airbnb", "7011",
    ),
]  # fmt: skip
AFTER_44011 = [
    BEFORE_44011[0],
    Transaction(
        "TXN-7002", "44011", Decimal("-64.00"), "GBP", date(2024, 3, 11), date(2024, 3, 10),
        BOOKED, "AIRBNB * HMX2QK LONDON", "Airbnb", "7011",
    ),
]  # fmt: skip


async def _snapshot(cls: type[ObieDialect], bank: FakeBank, fixture: str) -> list[Transaction]:
    bank.add(f"{BASE}/accounts/44011/transactions", fixture)
    async with bank.client() as client:
        return await cls(client, BASE, TOKEN).transactions("44011", since=None)


async def test_pending_entry_books_under_a_new_id_without_a_link(bank: FakeBank) -> None:
    before = await _snapshot(ObieDialect, bank, "obie/transactions_44011_before.json")
    after = await _snapshot(ObieDialect, bank, "obie/transactions_44011_after.json")

    assert exact(before) == exact(BEFORE_44011)
    assert exact(after) == exact(AFTER_44011)


class _LinkingBank(ObieDialect):
    """A bank quirk: the booked entry names its pending predecessor in SupplementaryData."""

    def pending_predecessor(self, raw: JsonObject) -> str | None:
        extra = opt_obj(raw, "SupplementaryData", "") or {}
        return opt_text(extra, "PendingTransactionId", "SupplementaryData")


async def test_pending_predecessor_hook_links_the_booked_entry(bank: FakeBank) -> None:
    after = await _snapshot(_LinkingBank, bank, "obie/transactions_44011_after.json")

    assert [t.pending_transaction_id for t in after] == [None, "PND-7001"]


def _one_transaction(**changes: object) -> bytes:
    raw: dict[str, object] = {
        "AccountId": "44011",
        "TransactionId": "T1",
        "CreditDebitIndicator": "Debit",
        "Status": "Booked",
        "BookingDateTime": "2024-03-08T10:00:00+00:00",
        "Amount": {"Amount": "1.00", "Currency": "GBP"},
    }
    raw.update(changes)
    return json.dumps({"Data": {"Transaction": [raw]}, "Links": {}, "Meta": {}}).encode()


async def _transactions_from(bank: FakeBank, body: bytes) -> list[Transaction]:
    bank.route(f"{BASE}/accounts/44011/transactions", lambda _: httpx.Response(200, content=body))
    async with bank.client() as client:
        return await ObieDialect(client, BASE, TOKEN).transactions("44011", since=None)


async def test_rejected_entries_are_skipped(bank: FakeBank) -> None:
    assert await _transactions_from(bank, _one_transaction(Status="Rejected")) == []


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"Amount": {"Amount": 1.0, "Currency": "GBP"}}, "Amount.Amount"),
        ({"Amount": {"Amount": "-1.00", "Currency": "GBP"}}, "Amount.Amount"),
        ({"Amount": {"Amount": "1.00", "Currency": "gbp"}}, "Amount.Currency"),
        ({"CreditDebitIndicator": "DBIT"}, "CreditDebitIndicator"),
        ({"Status": "Settled"}, "Status"),
        ({"BookingDateTime": "2024-03-08T10:00:00"}, "BookingDateTime"),
        ({"AccountId": "99999"}, "AccountId"),
    ],
    ids=["float", "signed", "currency", "indicator", "status", "naive-time", "foreign-account"],
)
async def test_non_conforming_entry_is_refused(
    bank: FakeBank, changes: dict[str, object], where: str
) -> None:
    with pytest.raises(BankProtocolError, match=rf"Data\.Transaction\[0\]\.{where}"):
        await _transactions_from(bank, _one_transaction(**changes))


async def test_balances_without_a_booked_type_are_refused(bank: FakeBank) -> None:
    body = {
        "Data": {
            "Balance": [
                {
                    "AccountId": "44011",
                    "Amount": {"Amount": "1.00", "Currency": "GBP"},
                    "CreditDebitIndicator": "Credit",
                    "Type": "InterimAvailable",
                    "DateTime": "2024-03-14T09:30:00+00:00",
                }
            ]
        }
    }
    bank.route(f"{BASE}/accounts/44011/balances", lambda _: httpx.Response(200, json=body))
    async with bank.client() as client:
        with pytest.raises(BankProtocolError, match="no booked balance in GBP"):
            await ObieDialect(client, BASE, TOKEN).balances("44011")


async def test_account_id_is_percent_encoded_into_one_path_segment(bank: FakeBank) -> None:
    async with bank.client() as client:
        with pytest.raises(BankProtocolError, match="HTTP 404"):
            await ObieDialect(client, BASE, TOKEN).balances("../../payments?x=1")

    assert bank.requests[0].url.raw_path == (
        b"/open-banking/v3.1/aisp/accounts/..%2F..%2Fpayments%3Fx%3D1/balances"
    )
