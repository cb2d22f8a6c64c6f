from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from aggregator.sandbox.testing import FlowDriver, Served, ServeFactory

AISP = "/open-banking/v3.1/aisp"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _first_account(driver: FlowDriver, token: str) -> dict[str, Any]:
    response = await driver.accounts(token)
    assert response.status_code == 200
    account: dict[str, Any] = response.json()["Data"]["Account"][0]
    return account


async def _all_transactions(served: Served, url: str, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        body = (await served.http.get(next_url, headers=_bearer(token))).json()
        items.extend(body["Data"]["Transaction"])
        next_url = body["Links"].get("Next")
    return items


@pytest.mark.parametrize(
    "path", ["/accounts", "/accounts/acc-x/balances", "/accounts/acc-x/transactions"]
)
@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic Yzox"])
async def test_account_api_requires_a_valid_bearer_token(
    served: Served, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}

    response = await served.http.get(AISP + path, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["Errors"][0]["ErrorCode"] == "UK.OBIE.Unauthorized"


async def test_account_api_requires_the_accounts_scope(driver: FlowDriver) -> None:
    tokens = await driver.tokens(scope="transactions")

    response = await driver.accounts(tokens["access_token"])

    assert response.status_code == 403
    assert "insufficient_scope" in response.headers["www-authenticate"]


async def test_accounts_follow_the_obie_shape(driver: FlowDriver, served: Served) -> None:
    tokens = await driver.tokens()

    body = (await driver.accounts(tokens["access_token"])).json()

    assert set(body) == {"Data", "Links", "Meta"}
    assert body["Links"]["Self"] == f"{served.base_url}{AISP}/accounts"
    accounts = body["Data"]["Account"]
    assert [a["AccountSubType"] for a in accounts] == ["CurrentAccount", "Savings"]
    for account in accounts:
        assert account["Currency"] == "GBP"
        assert account["AccountType"] == "Personal"
        assert account["Nickname"]
        (scheme,) = account["Account"]
        assert scheme["SchemeName"] == "UK.OBIE.SortCodeAccountNumber"
        assert re.fullmatch(r"\d{14}", scheme["Identification"])
        assert scheme["Name"] == "Alice Sandbox"


async def test_users_see_only_their_own_accounts(driver: FlowDriver, served: Served) -> None:
    alice = await driver.tokens("alice")
    bob = await driver.tokens("bob")
    alice_account = await _first_account(driver, alice["access_token"])

    response = await served.http.get(
        f"{AISP}/accounts/{alice_account['AccountId']}/balances",
        headers=_bearer(bob["access_token"]),
    )

    assert response.status_code == 404
    assert response.json()["Errors"][0]["ErrorCode"] == "UK.OBIE.Resource.NotFound"


async def test_balances_are_typed_string_amounts(driver: FlowDriver, served: Served) -> None:
    token = (await driver.tokens())["access_token"]
    account = await _first_account(driver, token)

    body = (
        await served.http.get(
            f"{AISP}/accounts/{account['AccountId']}/balances", headers=_bearer(token)
        )
    ).json()

    balances = {b["Type"]: b for b in body["Data"]["Balance"]}
    assert set(balances) == {"InterimBooked", "InterimAvailable"}
    for balance in balances.values():
        assert re.fullmatch(r"\d+\.\d{2}", balance["Amount"]["Amount"])
        assert balance["Amount"]["Currency"] == "GBP"
        assert balance["CreditDebitIndicator"] in {"Credit", "Debit"}


async def test_transactions_page_through_links_next(driver: FlowDriver, served: Served) -> None:
    token = (await driver.tokens())["access_token"]
    account = await _first_account(driver, token)
    url = f"{AISP}/accounts/{account['AccountId']}/transactions"

    first = (await served.http.get(url, headers=_bearer(token))).json()
    everything = await _all_transactions(served, url, token)

    assert len(first["Data"]["Transaction"]) == 25
    assert first["Meta"]["TotalPages"] == -(-len(everything) // 25)
    assert first["Links"]["Next"].startswith(f"{served.base_url}{url}?")
    assert len({t["TransactionId"] for t in everything}) == len(everything) >= 40
    assert any(t["Status"] == "Pending" for t in everything)
    booked = [t for t in everything if t["Status"] == "Booked"]
    assert all("ValueDateTime" in t for t in booked)
    assert any("MerchantDetails" in t for t in everything)
    assert any("DebtorAccount" in t for t in everything)
    assert any("CreditorAccount" in t for t in everything)
    for txn in everything:
        assert txn["CreditDebitIndicator"] in {"Credit", "Debit"}
        assert Decimal(txn["Amount"]["Amount"]) > 0
        assert txn["BookingDateTime"].endswith("+00:00")
        assert txn["TransactionInformation"]


async def test_page_size_is_configurable(
    serve: ServeFactory, new_driver: Callable[[Served], FlowDriver]
) -> None:
    async with serve(page_size=10) as s:
        driver = new_driver(s)
        token = (await driver.tokens())["access_token"]
        account = await _first_account(driver, token)
        body = (
            await s.http.get(
                f"{AISP}/accounts/{account['AccountId']}/transactions", headers=_bearer(token)
            )
        ).json()

    assert len(body["Data"]["Transaction"]) == 10


async def test_transactions_filter_by_booking_date(driver: FlowDriver, served: Served) -> None:
    token = (await driver.tokens())["access_token"]
    account = await _first_account(driver, token)
    url = f"{AISP}/accounts/{account['AccountId']}/transactions"
    everything = await _all_transactions(served, url, token)
    cutoff = sorted(t["BookingDateTime"] for t in everything)[len(everything) // 2]

    # OBIE filters are ISODateTime without an offset; the bank reads them as UTC.
    since = cutoff.removesuffix("+00:00")
    recent = await _all_transactions(served, f"{url}?fromBookingDateTime={since}", token)

    assert recent
    assert all(t["BookingDateTime"] >= cutoff for t in recent)
    assert len(recent) < len(everything)


async def test_bad_paging_parameter_is_a_400(driver: FlowDriver, served: Served) -> None:
    token = (await driver.tokens())["access_token"]
    account = await _first_account(driver, token)

    response = await served.http.get(
        f"{AISP}/accounts/{account['AccountId']}/transactions?page=zero", headers=_bearer(token)
    )

    assert response.status_code == 400
    assert response.json()["Errors"][0]["ErrorCode"] == "UK.OBIE.Field.Invalid"


async def test_fapi_interaction_id_is_echoed(driver: FlowDriver) -> None:
    token = (await driver.tokens())["access_token"]
    interaction = "93bac548-d2de-4546-b106-880a5018460d"

    response = await driver.accounts(token, **{"x-fapi-interaction-id": interaction})

    assert response.headers["x-fapi-interaction-id"] == interaction


@pytest.mark.parametrize("token", ["valid", "invalid"])
async def test_fapi_interaction_id_is_generated_when_absent(driver: FlowDriver, token: str) -> None:
    access = (await driver.tokens())["access_token"] if token == "valid" else "nope"

    response = await driver.accounts(access)

    assert re.fullmatch(r"[0-9a-f-]{36}", response.headers["x-fapi-interaction-id"])


async def test_advance_day_books_pending_under_a_new_transaction_id(
    driver: FlowDriver, served: Served
) -> None:
    token = (await driver.tokens())["access_token"]
    account = await _first_account(driver, token)
    url = f"{AISP}/accounts/{account['AccountId']}/transactions"
    before = await _all_transactions(served, url, token)
    pending = [t for t in before if t["Status"] == "Pending"]

    served.bank.advance_day()
    after = await _all_transactions(served, url, token)

    after_ids = {t["TransactionId"] for t in after}
    assert pending
    assert not {t["TransactionId"] for t in pending} & after_ids
    for old in pending:
        twins = [
            t
            for t in after
            if t["Status"] == "Booked"
            and t["Amount"] == old["Amount"]
            and t["TransactionInformation"] == old["TransactionInformation"]
            and t["ValueDateTime"] == old["BookingDateTime"]
        ]
        assert len(twins) == 1
    new_pending = [t for t in after if t["Status"] == "Pending"]
    assert new_pending
    assert {t["TransactionId"] for t in before if t["Status"] == "Booked"} < after_ids
