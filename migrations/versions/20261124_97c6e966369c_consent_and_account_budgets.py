"""consent lifecycle and per-account sync budgets

Revision ID: 97c6e966369c
Revises: e4b9c2a7d1f3
Create Date: 2026-11-24 16:00:00.000000

``connections.consent_warned_for``: the consent expiry the ``connection.consent_expiring``
event was sent for (one warning per consent period). ``sync_spends.account_id``: the
budget ledger becomes per connection, account and data type (``''`` for calls about the
connection, such as the account list), with the primary key and the lookup index
widened to include it.

COMPATIBILITY: during a rolling deploy the previous release runs against this schema.
Every migration must therefore stay compatible with the previous release's code: add
columns nullable or with a server default, add tables freely, and drop or rename
only what the previous release no longer reads (in a later migration). The same
file runs on SQLite and PostgreSQL: use batch_alter_table and portable types.
Here: the previous release inserts ledger rows without ``account_id`` (the server
default ``''`` files them as connection-level) and numbers them ``max(n) + 1`` over
the whole connection and data type, which stays unique under the wider key; it counts
every account's rows as its own, so it errs on the side of calling the bank less.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "97c6e966369c"
down_revision: str | None = "e4b9c2a7d1f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_INDEX = "ix_sync_spends_connection_id_data_type_spent_at"
_NEW_INDEX = "ix_sync_spends_connection_id_account_id_data_type_spent_at"


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("consent_warned_for", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("sync_spends", schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            "account_id", sa.String(length=40), server_default="", nullable=False
        ))
        batch_op.drop_index(_OLD_INDEX)
        batch_op.drop_constraint("pk_sync_spends", type_="primary")
        batch_op.create_primary_key(
            "pk_sync_spends", ["connection_id", "account_id", "data_type", "n"]
        )
        batch_op.create_index(
            _NEW_INDEX, ["connection_id", "account_id", "data_type", "spent_at"], unique=False
        )


def downgrade() -> None:
    # Per-account rows would collide under the narrower key: the ledger only limits the
    # next 24 hours, so it is emptied rather than merged.
    op.execute("DELETE FROM sync_spends")
    with op.batch_alter_table("sync_spends", schema=None) as batch_op:
        batch_op.drop_index(_NEW_INDEX)
        batch_op.drop_constraint("pk_sync_spends", type_="primary")
        batch_op.create_primary_key("pk_sync_spends", ["connection_id", "data_type", "n"])
        batch_op.drop_column("account_id")
        batch_op.create_index(_OLD_INDEX, ["connection_id", "data_type", "spent_at"],
                              unique=False)
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("consent_warned_for")
