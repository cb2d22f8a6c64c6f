"""The sync job's write side: what a snapshot becomes in the change log, and sealed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import select

from aggregator.custody import RegionCustody
from aggregator.models import Account, Connection, Transaction
from aggregator.models.base import utcnow
from aggregator.store import RegionRouter, changes_since
from aggregator.sync.snapshot import AccountSnapshot, Snapshot
from aggregator.sync.upsert import SnapshotWriter, SyncCounts
from connectors import Account as BankAccount
from connectors import AccountType, Balance, TransactionStatus
from connectors import Transaction as BankTransaction
from tests.aggregator._factories import Linked, LinkFactory, RawFiles
from tests.aggregator.conftest import Backend

IBAN = "GB33BUKB20201555555555"
BOOKED, PENDING = TransactionStatus.BOOKED, TransactionStatus.PENDING


def entry(bank_id: str, amount: str, status: TransactionStatus = BOOKED, *,
          text: str = "CARD PAYMENT", day: date = date(2025, 3, 3),
          replaces: str | None = None) -> BankTransaction:
    return BankTransaction(
        bank_transaction_id=bank_id, bank_account_id="bank-acc", amount=Decimal(amount),
        currency="GBP", booked_date=day, value_date=None, status=status, description=text,
        counterparty="Tesco Stores", merchant_category="5411", pending_transaction_id=replaces,
    )


def snapshot(*entries: BankTransaction, since: date | None = None,
             holder: str = "Alice Sandbox") -> Snapshot:
    account = BankAccount("bank-acc", "Everyday", AccountType.CHECKING, "GBP", "••5555", IBAN,
                          holder)
    balance = Balance("bank-acc", Decimal("10.00"), Decimal("8.00"), None, "GBP",
                      datetime(2025, 3, 3, tzinfo=UTC))
    return Snapshot(since, [AccountSnapshot(account, balance, list(entries))])


async def apply(router: RegionRouter, custody: RegionCustody, linked: Linked,
                snap: Snapshot) -> SyncCounts:
    async with router.session("eu") as session, session.begin():
        connection = await session.get(Connection, linked.connection.id)
        assert connection is not None
        key = await custody.data_keys.load(session, linked.user.id)
        return await SnapshotWriter(session, custody, key, connection, utcnow()).apply(snap)


async def test_a_first_snapshot_adds_every_entry_and_seals_the_pii(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
    raw_files: RawFiles, backend: Backend,
) -> None:
    linked = await make_linked("eu")
    counts = await apply(region_router, custody["eu"], linked, snapshot(
        entry("t1", "-3.50", text="CARD PAYMENT TO PRET"), entry("t2", "-9.99", PENDING),
    ))
    assert (counts.accounts, counts.added, counts.modified, counts.removed) == (1, 2, 0, 0)
    async with region_router.reader("eu") as session:
        changes = await changes_since(session, linked.connection.id, 0)
        account = (await session.execute(
            select(Account).where(Account.bank_account_id == "bank-acc")
        )).scalar_one()
    assert {t.bank_transaction_id for t in changes.added} == {"t1", "t2"}
    assert account.identifier_digest == custody["eu"].hasher.account_identifier(IBAN)
    if backend.name == "sqlite":
        for _, raw in raw_files():
            assert b"CARD PAYMENT TO PRET" not in raw
            assert IBAN.encode() not in raw
            assert b"Alice Sandbox" not in raw


async def test_a_pending_entry_booked_under_a_new_id_is_removed_and_added(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    await apply(region_router, custody["eu"], linked, snapshot(
        entry("t1", "-3.50"), entry("p1", "-9.99", PENDING),
    ))
    async with region_router.reader("eu") as session:
        cursor = (await changes_since(session, linked.connection.id, 0)).cursor

    counts = await apply(region_router, custody["eu"], linked, snapshot(
        entry("t1", "-3.50"), entry("b1", "-9.99", day=date(2025, 3, 4)),
        since=date(2025, 3, 1),
    ))

    assert (counts.added, counts.modified, counts.removed) == (1, 0, 1)
    async with region_router.reader("eu") as session:
        changes = await changes_since(session, linked.connection.id, cursor)
        pending = (await session.execute(
            select(Transaction).where(Transaction.bank_transaction_id == "p1")
        )).scalar_one()
    assert [t.bank_transaction_id for t in changes.added] == ["b1"]
    assert changes.removed == [pending.id]
    assert changes.modified == []


async def test_a_booked_entry_naming_its_pending_predecessor_retires_it(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    await apply(region_router, custody["eu"], linked, snapshot(entry("p1", "-9.99", PENDING)))
    counts = await apply(region_router, custody["eu"], linked, snapshot(
        entry("p1", "-9.99", PENDING), entry("b1", "-9.99", replaces="p1"),
        since=date(2025, 3, 1),
    ))
    assert (counts.added, counts.removed) == (1, 1)


async def test_changed_amounts_and_texts_are_modified_and_unchanged_ones_untouched(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    await apply(region_router, custody["eu"], linked, snapshot(
        entry("t1", "-3.50"), entry("t2", "-4.00"), entry("t3", "-5.00"),
    ))
    async with region_router.reader("eu") as session:
        cursor = (await changes_since(session, linked.connection.id, 0)).cursor

    counts = await apply(region_router, custody["eu"], linked, snapshot(
        entry("t1", "-3.75"), entry("t2", "-4.00", text="REFUND CORRECTED"),
        entry("t3", "-5.00"), since=date(2025, 3, 1),
    ))

    assert (counts.added, counts.modified, counts.removed) == (0, 2, 0)
    async with region_router.reader("eu") as session:
        changes = await changes_since(session, linked.connection.id, cursor)
        key = await custody["eu"].data_keys.load(session, linked.user.id)
    modified = {t.bank_transaction_id: t for t in changes.modified}
    assert set(modified) == {"t1", "t2"}
    assert modified["t1"].amount == Decimal("-3.75")
    text = await custody["eu"].sealer.open_from(key, modified["t2"], "description_sealed")
    assert text == "REFUND CORRECTED"


async def test_entries_outside_the_fetched_window_are_kept(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    await apply(region_router, custody["eu"], linked, snapshot(
        entry("old", "-1.00", day=date(2025, 1, 2)), entry("new", "-2.00"),
    ))
    counts = await apply(region_router, custody["eu"], linked, snapshot(
        entry("new", "-2.00"), since=date(2025, 3, 1),
    ))
    assert (counts.added, counts.modified, counts.removed) == (0, 0, 0)


async def test_an_entry_that_comes_back_after_removal_is_added_again(
    region_router: RegionRouter, custody: dict[str, RegionCustody], make_linked: LinkFactory,
) -> None:
    linked = await make_linked("eu")
    await apply(region_router, custody["eu"], linked, snapshot(entry("t1", "-1.00")))
    await apply(region_router, custody["eu"], linked, snapshot(since=date(2025, 3, 1)))
    async with region_router.reader("eu") as session:
        cursor = (await changes_since(session, linked.connection.id, 0)).cursor

    counts = await apply(region_router, custody["eu"], linked, snapshot(
        entry("t1", "-1.00"), since=date(2025, 3, 1),
    ))

    assert counts.added == 1
    async with region_router.reader("eu") as session:
        changes = await changes_since(session, linked.connection.id, cursor)
    assert [t.bank_transaction_id for t in changes.added] == ["t1"]
