"""transaction page index

Revision ID: s3_transaction_page_index
Revises: s3_consents
Create Date: 2026-12-06 14:00:00.000000

``GET /v1/accounts/{id}/transactions`` pages newest first by
``(coalesce(booked_on, value_on, '9999-12-31'), id)`` among the account's live rows.
Without an index in that order PostgreSQL read and sorted all of an account's rows for
every page (per-page latency at 200k rows was 7.6 times that at 1k). This partial
expression index matches the sort and the ``removed_at IS NULL`` filter, so a page is a
bounded index range scan on PostgreSQL and SQLite alike (bench/read_api_bench.py).

COMPATIBILITY: during a rolling deploy the previous release runs against this schema.
Every migration must therefore stay compatible with the previous release's code: add
columns nullable or with a server default, add tables freely, and drop or rename
only what the previous release no longer reads (in a later migration). The same
file runs on SQLite and PostgreSQL: use batch_alter_table and portable types.
An index changes no query's result, so the previous release is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "s3_transaction_page_index"
down_revision: str | None = "s3_consents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_transactions_account_page"


def upgrade() -> None:
    op.create_index(
        NAME, "transactions",
        ["account_id", sa.text("coalesce(booked_on, value_on, '9999-12-31')"), "id"],
        postgresql_where=sa.text("removed_at IS NULL"),
        sqlite_where=sa.text("removed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(NAME, table_name="transactions")
