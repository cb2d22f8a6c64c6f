"""Writing a snapshot: accounts and balances by upsert, transactions as a change log.

Transactions follow :mod:`aggregator.store.changes`: every insert, change, removal and
revival takes a number from the connection's change sequence, so an app's cursor sees
each exactly once. What counts as what:

- an entry the bank reports that we do not hold: **added**;
- one we hold whose amount, dates, status, category or sealed text changed: **modified**;
- one we hold, inside the fetched window, that the bank no longer reports, or a pending
  entry a booked one names as its predecessor: **removed** (kept as a tombstone). This is
  how a pending entry booked later under a new id shows up: removed + added, as Plaid's
  ``/transactions/sync`` reports it;
- a tombstone the bank reports again: added anew (the app already dropped it).

PII (account names, identifiers, holder names, descriptions, counterparties) is sealed under the
user's data key with its place as AAD; the identifier also gets a keyed hash for lookups.
Transactions go through Core statements (docs/architecture.md, "Syncing": bulk paths avoid the ORM).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.custody import RegionCustody
from aggregator.ids import new_id
from aggregator.models import (
    Account,
    AccountType,
    Balance,
    Connection,
    Transaction,
    TransactionStatus,
)
from aggregator.models.base import table_of
from aggregator.sealing import Field
from aggregator.store import take_change_seqs
from aggregator.sync.snapshot import AccountSnapshot, Snapshot
from connectors import Account as BankAccount
from connectors import Transaction as BankTransaction
from vault import WrappedKey

_txns = table_of(Transaction)


@dataclass(slots=True)
class SyncCounts:
    """How many rows one sync touched; what the API and the demo report."""

    accounts: int = 0
    added: int = 0
    modified: int = 0
    removed: int = 0


@dataclass(slots=True)
class _Plan:
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    removals: list[str] = field(default_factory=list)


class SnapshotWriter:
    """Applies one snapshot in the caller's write session, for one connection."""

    def __init__(
        self, session: AsyncSession, custody: RegionCustody, key: WrappedKey,
        connection: Connection, now: datetime,
    ) -> None:
        self.session = session
        self.custody = custody
        self.key = key
        self.connection = connection
        self.now = now
        #: Our account id of each bank account id the snapshot held, once applied.
        self.account_ids: dict[str, str] = {}

    async def apply(self, snapshot: Snapshot) -> SyncCounts:
        counts = SyncCounts(accounts=len(snapshot.accounts))
        plan = _Plan()
        for item in snapshot.accounts:
            account = await self._account(item.account)
            self.account_ids[item.account.bank_account_id] = account.id
            await self._balance(account, item)
            if item.read("transactions"):  # unread, absence would look like removal
                await self._plan_transactions(plan, account, item, snapshot.since)
        await self._write(plan, counts)
        return counts

    async def _seal(self, table: str, column: str, row_id: str, value: str | None) -> bytes | None:
        if value is None:
            return None
        place = Field(table, column, row_id, self.connection.user_id)
        return await self.custody.sealer.seal(self.key, place, value, session=self.session)

    async def _open(self, obj: Any, column: str) -> str | None:
        return await self.custody.sealer.open_from(self.key, obj, column)

    async def _account(self, bank: BankAccount) -> Account:
        found = (await self.session.execute(
            select(Account).where(
                Account.connection_id == self.connection.id,
                Account.bank_account_id == bank.bank_account_id,
            )
        )).scalar_one_or_none()
        if found is None:
            found = Account(
                id=new_id("acc", self.custody.region), connection_id=self.connection.id,
                user_id=self.connection.user_id, bank_account_id=bank.bank_account_id,
            )
            self.session.add(found)
        found.name = ""  # the clear column of releases before the name was sealed
        if found.name_sealed is None or await self._open(found, "name_sealed") != bank.name:
            found.name_sealed = await self._seal("accounts", "name_sealed", found.id, bank.name)
        found.type = AccountType(bank.type.value)
        found.currency = bank.currency
        found.masked_identifier = bank.masked_identifier
        digest = (
            None if bank.identifier is None
            else self.custody.hasher.account_identifier(bank.identifier)
        )
        if digest != found.identifier_digest or found.identifier_sealed is None:
            found.identifier_digest = digest
            found.identifier_sealed = await self._seal(
                "accounts", "identifier_sealed", found.id, bank.identifier
            )
        if found.holder_name_sealed is None or await self._open(
            found, "holder_name_sealed"
        ) != bank.holder_name:
            found.holder_name_sealed = await self._seal(
                "accounts", "holder_name_sealed", found.id, bank.holder_name
            )
        await self.session.flush()
        return found

    async def _balance(self, account: Account, item: AccountSnapshot) -> None:
        if item.balance is None:
            return
        b = item.balance
        await self.session.merge(Balance(
            account_id=account.id, user_id=account.user_id, current=b.current,
            available=b.available, credit_limit=b.credit_limit, currency=b.currency,
            as_of=b.as_of,
        ))

    async def _plan_transactions(
        self, plan: _Plan, account: Account, item: AccountSnapshot, since: date | None
    ) -> None:
        stmt = select(Transaction).where(Transaction.account_id == account.id)
        if since is not None:
            stmt = stmt.where(or_(
                Transaction.booked_on >= since, Transaction.booked_on.is_(None),
                Transaction.status == TransactionStatus.PENDING,
            ))
        held = {t.bank_transaction_id: t for t in (await self.session.execute(stmt)).scalars()}
        reported = {t.bank_transaction_id: t for t in item.transactions}
        replaced = {t.pending_transaction_id for t in item.transactions
                    if t.pending_transaction_id}
        for bank_id, entry in reported.items():
            row = held.get(bank_id)
            if row is None:
                plan.inserts.append(await self._new_row(account, entry))
            elif row.removed_at is not None:
                plan.updates.append({**await self._values(row, entry), "revive": True})
            elif changed := await self._changes(row, entry):
                plan.updates.append({"row_id": row.id, "revive": False, **changed})
        for bank_id, row in held.items():
            if row.removed_at is not None:
                continue
            vanished = bank_id not in reported and _inside(row, since)
            if vanished or bank_id in replaced:
                plan.removals.append(row.id)

    async def _new_row(self, account: Account, entry: BankTransaction) -> dict[str, Any]:
        txn_id = new_id("txn", self.custody.region)
        return {
            "id": txn_id, "account_id": account.id, "connection_id": self.connection.id,
            "user_id": self.connection.user_id, "bank_transaction_id": entry.bank_transaction_id,
            "removed_at": None, "created_at": self.now,
            **_clear(entry),
            **await self._sealed(txn_id, entry),
        }

    async def _sealed(self, txn_id: str, entry: BankTransaction) -> dict[str, Any]:
        return {
            "description_sealed": await self._seal(
                "transactions", "description_sealed", txn_id, entry.description),
            "counterparty_sealed": await self._seal(
                "transactions", "counterparty_sealed", txn_id, entry.counterparty),
        }

    async def _values(self, row: Transaction, entry: BankTransaction) -> dict[str, Any]:
        return {"row_id": row.id, **_clear(entry), **await self._sealed(row.id, entry)}

    async def _changes(self, row: Transaction, entry: BankTransaction) -> dict[str, Any] | None:
        clear = _clear(entry)
        differs = any(getattr(row, k) != v for k, v in clear.items())
        texts_differ = (
            await self._open(row, "description_sealed") != entry.description
            or await self._open(row, "counterparty_sealed") != entry.counterparty
        )
        if not differs and not texts_differ:
            return None
        sealed = await self._sealed(row.id, entry) if texts_differ else {
            "description_sealed": row.description_sealed,
            "counterparty_sealed": row.counterparty_sealed,
        }
        return {**clear, **sealed}

    async def _write(self, plan: _Plan, counts: SyncCounts) -> None:
        total = len(plan.inserts) + len(plan.updates) + len(plan.removals)
        if total == 0:
            return
        seq = await take_change_seqs(self.session, self.connection.id, total)
        for row in plan.inserts:
            row["created_seq"] = row["change_seq"] = seq
            seq += 1
        for row in plan.updates:
            row["new_change_seq"] = seq
            row["new_created_seq"] = seq if row.pop("revive") else None
            seq += 1
        if plan.inserts:
            await self.session.execute(insert(_txns), plan.inserts)
        for row in plan.updates:
            created = row.pop("new_created_seq")
            values = {k: v for k, v in row.items() if k not in ("row_id", "new_change_seq")}
            if created is not None:
                values.update(created_seq=created, removed_at=None)
                counts.added += 1
            else:
                counts.modified += 1
            await self.session.execute(
                update(_txns).where(_txns.c.id == row["row_id"])
                .values(change_seq=row["new_change_seq"], updated_at=self.now, **values)
            )
        if plan.removals:
            await self.session.execute(
                update(_txns).where(_txns.c.id == bindparam("row_id"))
                .values(removed_at=self.now, updated_at=self.now,
                        change_seq=bindparam("seq")),
                [{"row_id": rid, "seq": seq + i} for i, rid in enumerate(plan.removals)],
            )
        counts.added += len(plan.inserts)
        counts.removed += len(plan.removals)


def _clear(entry: BankTransaction) -> dict[str, Any]:
    """The columns kept in clear: amounts, dates, currencies, statuses
    (docs/architecture.md, "Secrets at rest")."""
    return {
        "amount": entry.amount,
        "currency": entry.currency,
        "booked_on": entry.booked_date,
        "value_on": entry.value_date,
        "status": TransactionStatus(entry.status.value),
        "merchant_category": category_code(entry.merchant_category),
        "pending_bank_transaction_id": entry.pending_transaction_id,
    }


#: What a category may look like to be kept in clear: an ISO 18245 merchant category code
#: or an upper-case enumeration such as Plaid's ``FOOD_AND_DRINK_COFFEE``. Banks send the
#: field as free text (OBIE Max4Text, Berlin Group Max4Text); anything else is dropped, so a
#: name a bank put there never lands in a clear column.
_CATEGORY = re.compile(r"\d{3,4}|[A-Z]+(?:_[A-Z0-9]+)+")


def category_code(value: str | None) -> str | None:
    return value if value is not None and _CATEGORY.fullmatch(value) else None


def _inside(row: Transaction, since: date | None) -> bool:
    """Whether the fetched window covered ``row``: only then does absence mean removal."""
    if since is None or row.booked_on is None:
        return True
    return row.booked_on >= since or row.status is TransactionStatus.PENDING
