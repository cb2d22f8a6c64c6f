"""bank health: call outcomes per minute, breaker heartbeats, refresh attempts

Revision ID: s4_bank_health
Revises: s3_link_branding
Create Date: 2026-12-06 16:30:00.000000

``bank_call_minutes``: per bank, operation (refresh, sync, consent), minute and outcome,
the calls, their latency sum and fixed histogram buckets, written in batches by the
worker and the gateway. ``breaker_heartbeats``: each process's circuit-breaker state per
bank, renewed every few seconds. ``refresh_attempts``: each refresh of a connection
(when, outcome, worker, error code; no token material). All three are pruned after a
retention (aggregator/bankhealth/store.py).

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

revision: str = "s4_bank_health"
down_revision: str | None = "s3_link_branding"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BUCKETS = ("le_100ms", "le_250ms", "le_500ms", "le_1s", "le_2500ms", "le_5s", "le_10s")


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "bank_call_minutes",
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _BUCKETS),
        sa.PrimaryKeyConstraint("bank_id", "operation", "minute", "outcome",
                                name=op.f("pk_bank_call_minutes")),
    )
    with op.batch_alter_table("bank_call_minutes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bank_call_minutes_minute"), ["minute"],
                              unique=False)
    op.create_table(
        "breaker_heartbeats",
        sa.Column("process_id", sa.String(length=64), nullable=False),
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("process_id", "bank_id", name=op.f("pk_breaker_heartbeats")),
    )
    with op.batch_alter_table("breaker_heartbeats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_breaker_heartbeats_seen_at"), ["seen_at"],
                              unique=False)
    op.create_table(
        "refresh_attempts",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("worker", sa.String(length=64), nullable=False),
        _fk("refresh_attempts", "connection_id", "connections"),
        _fk("refresh_attempts", "user_id", "users"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_refresh_attempts")),
    )
    with op.batch_alter_table("refresh_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_refresh_attempts_connection_id_attempted_at_seq"),
            ["connection_id", "attempted_at", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_refresh_attempts_attempted_at"),
                              ["attempted_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_refresh_attempts_user_id"), ["user_id"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("refresh_attempts")
    op.drop_table("breaker_heartbeats")
    op.drop_table("bank_call_minutes")
