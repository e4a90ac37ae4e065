"""export audit: the outcome of each export (issue 19, the fault suite)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

Until now only finished exports were written down. An export that fails
(the database restarted under it, the disk filled up) now leaves a row too,
with ``outcome = 'failed'``, so the audit trail shows every attempt.
Existing rows were all finished exports: the default ``'ok'`` describes
them. Adding a column with a constant default changes only the catalogue on
PostgreSQL (no table rewrite).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("export_audit") as batch:
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=False, server_default="ok"))


def downgrade() -> None:
    with op.batch_alter_table("export_audit") as batch:
        batch.drop_column("outcome")
