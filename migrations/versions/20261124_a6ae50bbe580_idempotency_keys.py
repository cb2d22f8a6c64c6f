"""idempotency keys

Revision ID: a6ae50bbe580
Revises: 01c44c7b706d
Create Date: 2026-11-24 15:30:00.000000

``idempotency_keys``: the first answer to a request sent with an ``Idempotency-Key``,
per application and key, kept 24 hours for retries (aggregator.idempotency).

COMPATIBILITY: during a rolling deploy the previous release runs against this schema.
Every migration must therefore stay compatible with the previous release's code: add
columns nullable or with a server default, add tables freely, and drop or rename
only what the previous release no longer reads (in a later migration). The same
file runs on SQLite and PostgreSQL: use batch_alter_table and portable types.
A new table is invisible to the previous release.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a6ae50bbe580"
down_revision: str | None = "01c44c7b706d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES = ("in_progress", "completed")


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("application_id", sa.String(length=40), nullable=False),
        sa.Column("key_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column(
            "state",
            sa.Enum(*_STATES, name="idempotency_state", native_enum=False,
                    create_constraint=True, length=24),
            nullable=False,
        ),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("response_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"], ["applications.id"],
            name=op.f("fk_idempotency_keys_application_id_applications"), ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"],
            name=op.f("fk_idempotency_keys_user_id_users"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("application_id", "key_digest", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_idempotency_keys_user_id"), ["user_id"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("idempotency_keys")
