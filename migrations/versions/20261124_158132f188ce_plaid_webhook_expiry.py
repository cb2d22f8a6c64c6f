"""plaid webhook expiry

Revision ID: 158132f188ce
Revises: 97c6e966369c
Create Date: 2026-11-24 16:00:00.000000

An index on ``plaid_webhook_events (status, received_at)``: the worker purges applied
and orphaned rows once Plaid's retry window has passed (their de-duplication is no longer
needed), in bounded batches that this index finds without scanning the table.

COMPATIBILITY: during a rolling deploy the previous release runs against this schema.
Every migration must therefore stay compatible with the previous release's code: add
columns nullable or with a server default, add tables freely, and drop or rename
only what the previous release no longer reads (in a later migration). The same
file runs on SQLite and PostgreSQL: use batch_alter_table and portable types.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "158132f188ce"
down_revision: str | None = "97c6e966369c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plaid_webhook_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_plaid_webhook_events_status_received_at"),
            ["status", "received_at"], unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("plaid_webhook_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plaid_webhook_events_status_received_at"))
