"""applications' own clients at banks (dynamic client registration)

Revision ID: s4_app_registrations
Revises: s4_bank_health
Create Date: 2026-12-06 17:00:00.000000

``app_registrations``: one row per application and bank whose profile asks for
per-application clients (RFC 7591), in the bank's region only; the client id in clear,
the client secret and the registration access token sealed under the region's pepper
(aggregator/models/registrations.py). ``connections.bank_client_id`` (and
``erasure_revocations.bank_client_id``): which client linked the connection; NULL for
every existing row, which keeps the static client.

COMPATIBILITY: a new table and a nullable column; the previous release reads neither.
The same file runs on SQLite and PostgreSQL (batch_alter_table, portable types).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "s4_app_registrations"
down_revision: str | None = "s4_bank_health"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_registrations",
        sa.Column("application_id", sa.String(length=40), nullable=False),
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("client_name", sa.String(length=200), nullable=False),
        sa.Column("client_secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("registration_access_token_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("registration_client_uri", sa.String(length=2048), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "stale",
                "deleting",
                "deleted",
                name="registration_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_app_registrations_application_id_applications"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("application_id", "bank_id", name=op.f("pk_app_registrations")),
    )
    with op.batch_alter_table("app_registrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_app_registrations_client_id"), ["client_id"], unique=False
        )
    for table in ("connections", "erasure_revocations"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("bank_client_id", sa.String(length=255), nullable=True))


def downgrade() -> None:
    for table in ("erasure_revocations", "connections"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("bank_client_id")
    with op.batch_alter_table("app_registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_app_registrations_client_id"))
    op.drop_table("app_registrations")
