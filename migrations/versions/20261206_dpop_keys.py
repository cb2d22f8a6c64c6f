"""dpop keys

Revision ID: s3_dpop_keys
Revises: a60b14cfbf0e
Create Date: 2026-12-06 13:30:00.000000

``credentials.dpop_key_sealed``: the connection's DPoP private key (RFC 9449), sealed
under the user's data key like the tokens it proves, so erasure destroys it with them.
NULL for every existing row: bearer-token banks never need one, and a connection at a
bank whose profile later asks for DPoP is sent to re-consent (connectors' refresh).

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

revision: str = "s3_dpop_keys"
down_revision: str | None = "a60b14cfbf0e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(sa.Column("dpop_key_sealed", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("dpop_key_sealed")
