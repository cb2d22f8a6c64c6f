"""sync runs and account resource freshness

Revision ID: s3_sync_runs
Revises: s3_security_review
Create Date: 2026-12-06 13:20:00.000000

``sync_runs``: one row per sync of a connection (start, end, outcome, per account and
resource what the bank answered, the bank's request id). ``account_resources``: per
account and resource, the latest outcome and the last successful read.
``sync_states.last_outcome``: the outcome of the connection's latest sync, backfilled
``complete`` where a sync already succeeded and ``failed`` where the last one failed;
``sync_states.retry_at``/``retry_attempts``: the scheduled sync's retry after a
transient failure (none pending: NULL and 0).

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

revision: str = "s3_sync_runs"
down_revision: str | None = "s3_security_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SYNC_OUTCOMES = ("complete", "partial", "failed")
_RESOURCE_OUTCOMES = ("ok", "not_permitted", "not_offered", "failed")


def _enum(values: tuple[str, ...], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=24)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", _enum(_SYNC_OUTCOMES, "sync_outcome"), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("accounts", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("modified", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("resources", sa.JSON(), nullable=False),
        _fk("sync_runs", "connection_id", "connections"),
        _fk("sync_runs", "user_id", "users"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_runs_connection_id_started_at_id"),
            ["connection_id", "started_at", "id"], unique=False,
        )
        batch_op.create_index(batch_op.f("ix_sync_runs_user_id"), ["user_id"], unique=False)
    op.create_table(
        "account_resources",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("outcome", _enum(_RESOURCE_OUTCOMES, "resource_outcome"), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        _fk("account_resources", "account_id", "accounts"),
        _fk("account_resources", "user_id", "users"),
        sa.PrimaryKeyConstraint("account_id", "resource", name=op.f("pk_account_resources")),
    )
    with op.batch_alter_table("account_resources", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_account_resources_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_outcome", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("retry_attempts", sa.Integer(),
                                      server_default=sa.text("0"), nullable=False))
    op.execute(
        "UPDATE sync_states SET last_outcome = CASE WHEN last_error IS NULL "
        "THEN 'complete' ELSE 'failed' END WHERE last_synced_at IS NOT NULL "
        "OR last_error IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.drop_column("retry_attempts")
        batch_op.drop_column("retry_at")
        batch_op.drop_column("last_outcome")
    op.drop_table("account_resources")
    op.drop_table("sync_runs")
