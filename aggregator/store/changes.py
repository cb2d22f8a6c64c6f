"""The per-connection change sequence behind Plaid-style ``/transactions/sync``.

Every write to a connection's transactions takes sequence numbers from
``connections.change_seq`` and stamps them on the rows (``created_seq`` once,
``change_seq`` on every change, ``removed_at`` for tombstones). An app's cursor is a
position in that sequence; :func:`changes_since` answers "added, modified, removed since".

Why per connection, on the connection row: the ``UPDATE … RETURNING`` that hands out
numbers row-locks the connection until commit, so two writers to one connection commit
in sequence order. A reader can then never see number 11 committed while 10 is still in
flight and skip it forever, the trap of a global sequence (or SQLite's single writer,
which gives the same order for free). Writers to different connections never wait on
each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Integer, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.errors import MalformedId
from aggregator.ids import ConnectionId, TransactionId
from aggregator.models import Connection, Transaction
from aggregator.models.base import table_of
from aggregator.store.quick import QuickReader

_connections = table_of(Connection)
T = TypeVar("T")


async def take_change_seqs(session: AsyncSession, connection_id: ConnectionId, count: int) -> int:
    """Reserve ``count`` numbers for a connection's changes; returns the first of them.

    The connection stays locked until the session commits: take the numbers late in the
    unit of work, after any bank calls.
    """
    if count < 1:
        raise ValueError("count must be positive")
    last = (await session.execute(
        update(_connections)
        .where(_connections.c.id == connection_id)
        .values(change_seq=_connections.c.change_seq + count)
        .returning(_connections.c.change_seq)
    )).scalar_one_or_none()
    if last is None:
        raise MalformedId(f"no connection {connection_id} in this region")
    return int(last) - count + 1


@dataclass(frozen=True, slots=True)
class Changes(Generic[T]):
    """One page of changes since a cursor; ``cursor`` is where the next page starts.

    ``T``: ORM :class:`Transaction` entities from :func:`changes_since`, rows of
    :data:`CHANGE_COLUMNS` from :func:`change_rows_since`.
    """

    added: list[T]
    modified: list[T]
    removed: list[TransactionId]
    cursor: int
    has_more: bool


async def changes_since(
    session: AsyncSession, connection_id: ConnectionId, cursor: int, *, limit: int = 500
) -> Changes[Transaction]:
    """Transactions of the connection changed after ``cursor`` (0: from the beginning).

    A row added and then removed after the cursor is not reported at all, as Plaid does.
    """
    rows = list(
        (
            await session.execute(
                select(Transaction)
                .where(Transaction.connection_id == connection_id, Transaction.change_seq > cursor)
                .order_by(Transaction.change_seq)
                .limit(limit + 1)
            )
        ).scalars()
    )
    return _classify(rows, cursor, limit)


#: What the sync endpoint answers with, plus what tells added, modified and removed apart.
CHANGE_COLUMNS = (
    Transaction.id,
    Transaction.account_id,
    Transaction.user_id,
    Transaction.amount,
    Transaction.currency,
    Transaction.status,
    Transaction.booked_on,
    Transaction.value_on,
    Transaction.description_sealed,
    Transaction.counterparty_sealed,
    Transaction.merchant_category,
    Transaction.removed_at,
    Transaction.created_seq,
    Transaction.change_seq,
)
_CHANGE_ROWS = (
    select(*CHANGE_COLUMNS)
    .where(
        Transaction.connection_id == bindparam("connection_id"),
        Transaction.change_seq > bindparam("cursor"),
    )
    .order_by(Transaction.change_seq)
    .limit(bindparam("limit", type_=Integer()))
)


async def change_rows_since(
    reader: QuickReader, connection_id: ConnectionId, cursor: int, *, limit: int = 500
) -> Changes[Any]:
    """:func:`changes_since` as rows of :data:`CHANGE_COLUMNS`, on the quick reader:
    the app-facing sync endpoint loads no ORM entities (bench/README.md)."""
    rows = await reader.rows(
        _CHANGE_ROWS, {"connection_id": connection_id, "cursor": cursor, "limit": limit + 1}
    )
    return _classify(list(rows), cursor, limit)


def _classify(rows: list[T], cursor: int, limit: int) -> Changes[T]:
    page, has_more = rows[:limit], len(rows) > limit
    added: list[T] = []
    modified: list[T] = []
    removed: list[TransactionId] = []
    for txn in page:
        t: Any = txn
        if t.removed_at is not None:
            if t.created_seq <= cursor:
                removed.append(t.id)
        elif t.created_seq > cursor:
            added.append(txn)
        else:
            modified.append(txn)
    next_cursor = int(cast(Any, page[-1]).change_seq) if page else cursor
    return Changes(added, modified, removed, next_cursor, has_more)
