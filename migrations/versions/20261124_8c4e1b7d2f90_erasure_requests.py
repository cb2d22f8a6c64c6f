"""erasure requests

Revision ID: 8c4e1b7d2f90
Revises: 3f6d2a9c81b0
Create Date: 2026-11-24 13:10:00.000000

Data-subject erasure: ``erasure_requests`` (the job's progress and, when done, the
receipt), ``erasure_revocations`` (one row per bank grant revoked), and
``users.erasing_since`` (the "stop new activity" mark).

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

revision: str = "8c4e1b7d2f90"
down_revision: str | None = "3f6d2a9c81b0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES = ("requested", "stopped", "revoked", "deleted", "shredded", "completed")
_OUTCOMES = ("pending", "revoked", "failed", "unsupported", "no_token")


def _enum(values: tuple[str, ...], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=24)


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erasing_since", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "erasure_requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("application_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.Column("user_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("state", _enum(_STATES, "erasure_state"), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("runs", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["application_id"], ["applications.id"],
            name=op.f("fk_erasure_requests_application_id_applications"), ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasure_requests")),
        sa.UniqueConstraint("user_digest", name=op.f("uq_erasure_requests_user_digest")),
    )
    with op.batch_alter_table("erasure_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_erasure_requests_application_id"), ["application_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_erasure_requests_deadline_at"), ["deadline_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_erasure_requests_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "erasure_revocations",
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("n", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=True),
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("token_type", sa.String(length=16), nullable=True),
        sa.Column("token_escrow", sa.LargeBinary(), nullable=True),
        sa.Column("outcome", _enum(_OUTCOMES, "revocation_outcome"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.Column("raced_refresh", sa.Boolean(), server_default=sa.text("false"),
                  nullable=False),
        sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"], ["erasure_requests.id"],
            name=op.f("fk_erasure_revocations_request_id_erasure_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "n", name=op.f("pk_erasure_revocations")),
    )


def downgrade() -> None:
    op.drop_table("erasure_revocations")
    with op.batch_alter_table("erasure_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_erasure_requests_user_id"))
        batch_op.drop_index(batch_op.f("ix_erasure_requests_deadline_at"))
        batch_op.drop_index(batch_op.f("ix_erasure_requests_application_id"))
    op.drop_table("erasure_requests")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("erasing_since")
