"""plaid webhook events

Revision ID: 5b7e9d3a1c42
Revises: 8c4e1b7d2f90
Create Date: 2026-11-24 13:50:00.000000

``plaid_webhook_events``: verified Plaid webhooks keyed by the SHA-256 of their body
(de-duplication), each row also the worker's job (``status``, ``available_at``).

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

revision: str = "5b7e9d3a1c42"
down_revision: str | None = "8c4e1b7d2f90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUS = ("pending", "applied", "orphaned")


def upgrade() -> None:
    op.create_table(
        "plaid_webhook_events",
        sa.Column("body_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("region", sa.String(length=8), nullable=False),
        sa.Column("item_id", sa.String(length=255), nullable=True),
        sa.Column("connection_id", sa.String(length=40), nullable=True),
        sa.Column("webhook_type", sa.String(length=64), nullable=False),
        sa.Column("webhook_code", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(*_STATUS, name="webhook_status", native_enum=False, create_constraint=True,
                    length=24),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"], ["connections.id"],
            name=op.f("fk_plaid_webhook_events_connection_id_connections"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("body_sha256", name=op.f("pk_plaid_webhook_events")),
    )
    with op.batch_alter_table("plaid_webhook_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_plaid_webhook_events_connection_id"), ["connection_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_plaid_webhook_events_item_id"), ["item_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_plaid_webhook_events_status_available_at"),
            ["status", "available_at"], unique=False,
        )


def downgrade() -> None:
    op.drop_table("plaid_webhook_events")
