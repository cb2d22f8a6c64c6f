"""plaid webhook redelivery

Revision ID: s3_plaid_redelivery
Revises: s3_dpop_keys
Create Date: 2026-12-06 13:30:00.000000

``plaid_webhook_events.redelivered_at``: when a delivery identical to a still-pending
webhook arrived (it is coalesced into that row). A ``SYNC_UPDATES_AVAILABLE`` row whose
sync was already running when the repeat arrived is synced once more instead of being
closed (README, "Plaid webhooks"). Nullable, no backfill:
the previous release neither reads nor writes it.

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

revision: str = "s3_plaid_redelivery"
down_revision: str | None = "s3_dpop_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plaid_webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("redelivered_at", sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("plaid_webhook_events", schema=None) as batch_op:
        batch_op.drop_column("redelivered_at")
