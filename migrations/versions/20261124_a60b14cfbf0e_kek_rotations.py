"""kek rotations

Revision ID: a60b14cfbf0e
Revises: a6ae50bbe580
Create Date: 2026-11-24 16:00:00.000000

``kek_rotations``: the region KEK's rotation schedule and the lease of the worker that
rotates it and rewraps data keys (aggregator.worker.rotation); an index on
``data_keys.kek_version`` so the rewrap finds the rows below the newest version without
scanning the table.

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

revision: str = "a60b14cfbf0e"
down_revision: str | None = "a6ae50bbe580"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kek_rotations",
        sa.Column("kek_id", sa.String(length=128), nullable=False),
        sa.Column("region", sa.String(length=8), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kek_id", name=op.f("pk_kek_rotations")),
    )
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_data_keys_kek_version"), ["kek_version"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_keys_kek_version"))
    op.drop_table("kek_rotations")
