"""security review (issue 16)

Revision ID: s3_security_review
Revises: s3_transaction_page_index
Create Date: 2026-12-06 13:30:00.000000

- ``link_sessions.browser_digest``: the SHA-256 of the cookie binding a Link flow to the
  browser that opened it (aggregator.link.browser). Sessions in flight during the deploy
  have none and are refused at the bank pick or callback: they last ten minutes.
- ``accounts.name_sealed``: the account name, sealed under the user's data key. The
  clear ``accounts.name`` stays (the previous release reads it) and new code writes it
  as "". Existing clear names are sealed and cleared right after this schema step by
  ``aggregator migrate`` (aggregator.account_names.seal_clear_names: batches, each its
  own transaction, under each user's data key, resumable), since sealing needs the
  region's key provider, which a migration does not have.
- ``idempotency_keys.response_user_sealed``: an answer about a user, sealed under the
  user's data key (aggregator.idempotency), so erasure reaches copies in backups. Rows
  of the previous release (pepper-sealed) expire within 24 hours and still replay.
- ``applications.webhook_url_sealed``: the event URL, sealed under the region's
  pepper-derived key (a URL may carry a credential). ``aggregator migrate`` seals clear
  URLs and clears ``webhook_url``; a worker of the previous release then finds no URL and
  retries later (events are retried for more than 24 hours).
- ``data_key_erasures``: data keys destroyed by erasure, polled by every process so that
  cached copies are dropped promptly (aggregator.datakeys.DataKeys.notice_erasures).
- ``data_keys.previous_*``: a user's key before a rotation, kept wrapped while the
  user's values are resealed under the new one (aggregator.reseal).

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

revision: str = "s3_security_review"
down_revision: str | None = "s3_transaction_page_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_key_erasures",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("dek_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_data_key_erasures")),
    )
    op.create_index(op.f("ix_data_key_erasures_erased_at"), "data_key_erasures",
                    ["erased_at"], unique=False)
    with op.batch_alter_table("link_sessions") as batch:
        batch.add_column(sa.Column("browser_digest", sa.LargeBinary(length=32), nullable=True))
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("name_sealed", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("response_user_sealed", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("webhook_url_sealed", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("data_keys") as batch:
        batch.add_column(sa.Column("previous_dek_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("previous_kek_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("previous_ciphertext", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("data_keys") as batch:
        batch.drop_column("previous_ciphertext")
        batch.drop_column("previous_kek_version")
        batch.drop_column("previous_dek_id")
    op.drop_index(op.f("ix_data_key_erasures_erased_at"), table_name="data_key_erasures")
    op.drop_table("data_key_erasures")
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("webhook_url_sealed")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("response_user_sealed")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("name_sealed")
    with op.batch_alter_table("link_sessions") as batch:
        batch.drop_column("browser_digest")
