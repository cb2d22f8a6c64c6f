"""consent resources of regulated banks

Revision ID: s3_consents
Revises: s3_plaid_redelivery
Create Date: 2026-12-06 13:30:00.000000

``connections.consent_id``: the bank's consent resource id (OBIE ``ConsentId``, Berlin
Group ``consentId``), and ``connections.consent_granted_at``: when the user last
authorised it (OBIE ``x-fapi-auth-date``). ``erasure_revocations.consent_id``: the
consent an erasure deletes at the bank, kept after the connection row is gone.

Stored in clear: a consent id is not a credential (every call on it also needs the
client's own token, obtained with its private key or transport certificate), the bank
and operators name it in support cases, and erasure must still delete it after the
user's data key is destroyed. Existing rows have none (NULL): plain OAuth2 banks.

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

revision: str = "s3_consents"
down_revision: str | None = "s3_plaid_redelivery"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consent_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("consent_granted_at", sa.DateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table("erasure_revocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consent_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("erasure_revocations", schema=None) as batch_op:
        batch_op.drop_column("consent_id")
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("consent_granted_at")
        batch_op.drop_column("consent_id")
