"""The Plaid connector against the loopback Plaid, through the real plaid-python client."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors import (
    AccountType,
    BankProtocolError,
    BankUnavailable,
    ItemLoginRequired,
    MutationDuringPagination,
    PlaidConfig,
    PlaidConnector,
    PlaidEnvironment,
    TransactionStatus,
)
from tests.connectors.plaid.fake_plaid import SECRET, FakePlaid, plaid_transaction
from vault import Secret

Fake = tuple[FakePlaid, str]
WEBHOOK = "https://gw.example.test/webhooks/plaid/us"


async def test_link_token_create_sends_user_products_and_webhook(
    plaid_connector: PlaidConnector, fake_plaid: Fake
) -> None:
    fake, _ = fake_plaid
    link = await plaid_connector.create_link_token("usr_us_abc", webhook_url=WEBHOOK)
    assert link.link_token.startswith("link-sandbox-")
    path, body = fake.requests[-1]
    assert path == "/link/token/create"
    assert body["user"] == {"client_user_id": "usr_us_abc"}
    assert body["products"] == ["transactions"]
    assert body["country_codes"] == ["US"]
    assert body["webhook"] == WEBHOOK
    assert "access_token" not in body


async def test_update_mode_link_token_carries_the_access_token_and_no_products(
    plaid_connector: PlaidConnector, fake_plaid: Fake
) -> None:
    fake, _ = fake_plaid
    item = await plaid_connector.exchange_public_token(Secret("public-sandbox-1"))
    await plaid_connector.create_link_token("usr_us_abc", webhook_url=WEBHOOK,
                                            access_token=item.access_token)
    _, body = fake.requests[-1]
    assert body["access_token"] == item.access_token.reveal()
    assert "products" not in body


async def test_exchange_returns_item_and_sealed_token(plaid_connector: PlaidConnector) -> None:
    item = await plaid_connector.exchange_public_token(Secret("public-sandbox-1"))
    assert item.item_id.startswith("item-")
    assert "access-sandbox" not in repr(item)


async def test_accounts_map_types_and_flip_owed_balances(
    plaid_connector: PlaidConnector,
) -> None:
    item = await plaid_connector.exchange_public_token(Secret("p"))
    accounts, balances = await plaid_connector.get_accounts(item.access_token)
    assert [a.type for a in accounts] == [AccountType.CHECKING, AccountType.CREDIT_CARD]
    assert accounts[0].masked_identifier == "••••0000"
    assert accounts[0].identifier is None
    checking, card = balances
    assert (checking.current, checking.available) == (Decimal("110.0"), Decimal("100.0"))
    assert (card.current, card.available, card.credit_limit) == (
        Decimal("-1230.0"), Decimal("3770.0"), Decimal("5000.0"))


async def test_sync_pages_until_done_and_flips_amount_signs(
    plaid_connector: PlaidConnector, fake_plaid: Fake
) -> None:
    fake, _ = fake_plaid
    fake.pages = [
        {"added": [plaid_transaction("t1", 4.33), plaid_transaction("t2", -500.0)]},
        {"added": [plaid_transaction("t3", 12.5, pending=True)],
         "modified": [plaid_transaction("t1", 4.5)]},
        {"removed": [{"transaction_id": "t3", "account_id": "acc-1"}]},
    ]
    item = await plaid_connector.exchange_public_token(Secret("p"))
    batch = await plaid_connector.sync_transactions(item.access_token, None)
    assert batch.pages == 3
    assert batch.next_cursor == "cur-3"
    amounts = {t.bank_transaction_id: t.amount for t in batch.added}
    # Plaid: positive = money out. Ours: negative = money out.
    assert amounts == {"t1": Decimal("-4.33"), "t2": Decimal("500.0"), "t3": Decimal("-12.5")}
    assert batch.added[2].status is TransactionStatus.PENDING
    assert [t.amount for t in batch.modified] == [Decimal("-4.5")]
    assert [r.bank_transaction_id for r in batch.removed] == ["t3"]


async def test_sync_restarts_from_the_committed_cursor_after_a_mutation(
    plaid_connector: PlaidConnector, fake_plaid: Fake
) -> None:
    fake, _ = fake_plaid
    fake.pages = [{"added": [plaid_transaction("t1", 1.0)]},
                  {"added": [plaid_transaction("t2", 2.0)]},
                  {"added": [plaid_transaction("t3", 3.0)]}]
    fake.mutate_on = {2}
    item = await plaid_connector.exchange_public_token(Secret("p"))
    batch = await plaid_connector.sync_transactions(item.access_token, "cur-1")
    assert batch.restarts == 1
    assert [t.bank_transaction_id for t in batch.added] == ["t2", "t3"]  # nothing twice
    cursors = [b.get("cursor") for p, b in fake.requests if p == "/transactions/sync"]
    assert cursors == ["cur-1", "cur-2", "cur-1", "cur-2"]


async def test_sync_gives_up_after_bounded_restarts(
    plaid_connector: PlaidConnector, fake_plaid: Fake
) -> None:
    fake, _ = fake_plaid
    fake.pages = [{"added": []}, {"added": []}]
    item = await plaid_connector.exchange_public_token(Secret("p"))
    fake.mutate_on = {1}
    with pytest.raises(MutationDuringPagination):
        await plaid_connector.sync_transactions(item.access_token, None, max_restarts=0)


async def test_item_remove(plaid_connector: PlaidConnector, fake_plaid: Fake) -> None:
    fake, _ = fake_plaid
    item = await plaid_connector.exchange_public_token(Secret("p"))
    await plaid_connector.remove_item(item.access_token)
    assert fake.removed_items == [item.item_id]


@pytest.mark.parametrize(("status", "kind", "code", "error"), [
    (400, "ITEM_ERROR", "ITEM_LOGIN_REQUIRED", ItemLoginRequired),
    (429, "RATE_LIMIT_EXCEEDED", "TRANSACTIONS_LIMIT", BankUnavailable),
    (500, "API_ERROR", "INTERNAL_SERVER_ERROR", BankUnavailable),
    (400, "INVALID_REQUEST", "MISSING_FIELDS", BankProtocolError),
])
async def test_plaid_errors_are_mapped_without_secrets(
    plaid_connector: PlaidConnector, fake_plaid: Fake, status: int, kind: str, code: str,
    error: type[Exception],
) -> None:
    fake, _ = fake_plaid
    item = await plaid_connector.exchange_public_token(Secret("p"))
    fake.fail_next = (status, kind, code)
    with pytest.raises(error) as caught:
        await plaid_connector.get_accounts(item.access_token)
    assert code in str(caught.value)
    assert item.access_token.reveal() not in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_unreachable_plaid_is_unavailable() -> None:
    connector = PlaidConnector(PlaidConfig("us", "c", Secret("s"), PlaidEnvironment.SANDBOX,
                                           host="http://127.0.0.1:9", timeout=2.0))
    with pytest.raises(BankUnavailable):
        await connector.remove_item(Secret("access-x"))


def test_config_masks_the_secret_and_picks_the_environment_host() -> None:
    config = PlaidConfig("us", "cid", Secret("hush"), PlaidEnvironment.PRODUCTION)
    assert config.api_host == "https://production.plaid.com"
    assert "hush" not in repr(config)
