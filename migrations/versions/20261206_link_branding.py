"""link page branding and locale

Revision ID: s3_link_branding
Revises: s3_operators
Create Date: 2026-12-06 15:00:00.000000

``applications.brand_name``, ``brand_logo`` (a size-capped ``data:`` image URL) and
``brand_accent`` (``#rrggbb``, checked for WCAG contrast when set): what the Link page
shows of the app (aggregator/branding.py). ``link_sessions.locale``: the language
the app asked the Link page to speak. All nullable: existing rows fall back to the app's
name, the gateway's look and the browser's ``Accept-Language``.

COMPATIBILITY: additive, nullable columns only; the previous release never reads them.
The same file runs on SQLite and PostgreSQL (batch_alter_table, portable types).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "s3_link_branding"
down_revision: str | None = "s3_operators"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("brand_name", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("brand_logo", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("brand_accent", sa.String(length=7), nullable=True))
    with op.batch_alter_table("link_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("locale", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("link_sessions", schema=None) as batch_op:
        batch_op.drop_column("locale")
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.drop_column("brand_accent")
        batch_op.drop_column("brand_logo")
        batch_op.drop_column("brand_name")
