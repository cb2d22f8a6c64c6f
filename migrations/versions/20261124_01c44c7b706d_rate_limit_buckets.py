"""rate limit buckets

Revision ID: 01c44c7b706d
Revises: 158132f188ce
Create Date: 2026-11-24 16:00:00.000000

``rate_limit_buckets``: the API rate limiter's token buckets, one row per route class
and subject (aggregator.http.ratelimit), with ``expires_at`` indexed for the purge.

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

revision: str = "01c44c7b706d"
down_revision: str | None = "158132f188ce"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_buckets",
        sa.Column("bucket", sa.String(length=96), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_rate_limit_buckets")),
    )
    with op.batch_alter_table("rate_limit_buckets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rate_limit_buckets_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("rate_limit_buckets")
