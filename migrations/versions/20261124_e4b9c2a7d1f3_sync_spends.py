"""sync spends

Revision ID: e4b9c2a7d1f3
Revises: c71e4a2d9b35
Create Date: 2026-11-24 15:00:00.000000

``sync_spends``: the sync budget ledger, one row per unattended bank call spent, per
connection and data type (counted in a rolling 24 hours by aggregator.sync.budget).

COMPATIBILITY: during a rolling deploy the previous release runs against this schema.
Every migration must therefore stay compatible with the previous release's code: add
columns nullable or with a server default, add tables freely, and drop or rename
only what the previous release no longer reads (in a later migration). The same
file runs on SQLite and PostgreSQL: use batch_alter_table and portable types.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e4b9c2a7d1f3"
down_revision: str | None = "c71e4a2d9b35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DATA_TYPES = ("accounts", "transactions")


def upgrade() -> None:
    op.create_table(
        "sync_spends",
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column(
            "data_type",
            sa.Enum(*_DATA_TYPES, name="sync_data_type", native_enum=False,
                    create_constraint=True, length=24),
            nullable=False,
        ),
        sa.Column("n", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("spent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"], ["connections.id"],
            name=op.f("fk_sync_spends_connection_id_connections"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"],
            name=op.f("fk_sync_spends_user_id_users"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", "data_type", "n", name=op.f("pk_sync_spends")),
    )
    with op.batch_alter_table("sync_spends", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_spends_connection_id_data_type_spent_at"),
            ["connection_id", "data_type", "spent_at"], unique=False,
        )
        batch_op.create_index(batch_op.f("ix_sync_spends_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_table("sync_spends")
