"""one normalised sensitivity rule: category keys, known categories, tracking-number keys

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

The old rule ("length 3 and lower(category) = 'gbv'") let ``'GBV '``,
``'gbv\\u200b'``, full-width ``ＧＢＶ`` and look-alike letters through
(issue 14). Now (data.sensitivity):

- ``opsdash_key(text)``: NFKC, every whitespace/control/format character
  removed, ASCII-folded. PostgreSQL: an IMMUTABLE SQL function, built from the
  same code-point list as the Python ``name_key``. SQLite (the demo): that
  Python function, registered on every connection by data.db.
- ``tickets.category_key``: ``opsdash_key(category)``, a generated column,
  so every writer (the ticketing system included) keeps it right.
- ``ticket_categories``: the known categories, filled with the ticketing
  system's nine. A ticket is visible only when its key is one of them
  (fail closed); the table refuses ``gbv``.
- An index on ``opsdash_key(tracking_number)``: the live hub resolves the
  tickets events name by tracking number in any case and spacing.
- The first-response index (0004) and the category index carry the key
  instead of the raw category; 0005's statistics on ``lower(category)`` give
  way to the key column's own.

PostgreSQL rewrites ``tickets`` once for the stored column (locked meanwhile),
like 0003: README "Upgrading" gives the time measured.
"""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from data.sensitivity import DEFAULT_CATEGORIES, SENSITIVE_KEY, pg_key_function_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FIRST_RESPONSE = "ix_tickets_first_response"
RESPONSE_SECONDS = "date_part('epoch', first_responded_at - created_at)"  # as 0004


def _first_response_index(gate_column: str) -> str:
    return (f"CREATE INDEX {FIRST_RESPONSE} ON tickets (tenant_id, ({RESPONSE_SECONDS})) "
            f"INCLUDE (is_sensitive, {gate_column}, created_at, first_responded_at) "
            "WHERE first_responded_at IS NOT NULL")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(pg_key_function_sql())
        op.execute("ALTER TABLE tickets ADD COLUMN category_key text GENERATED ALWAYS AS (opsdash_key(category)) STORED")
        op.execute("DROP STATISTICS IF EXISTS st_tickets_category_lower")
        op.execute(f"DROP INDEX IF EXISTS {FIRST_RESPONSE}")
        op.execute(_first_response_index("category_key"))
    else:
        # SQLite cannot add a stored generated column to a table: a virtual one, computed when read.
        op.execute("ALTER TABLE tickets ADD COLUMN category_key TEXT GENERATED ALWAYS AS (opsdash_key(category)) VIRTUAL")
    op.drop_index("ix_tickets_tenant_category", table_name="tickets")
    op.create_index("ix_tickets_tenant_category_key", "tickets", ["tenant_id", "category_key"])
    op.execute("CREATE INDEX ix_tickets_tracking_key ON tickets (opsdash_key(tracking_number))")
    categories = op.create_table(
        "ticket_categories",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("added_by", sa.String(150), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"key <> '{SENSITIVE_KEY}'", name="ck_ticket_categories_never_sensitive"),
    )
    now = datetime.now(timezone.utc)
    op.bulk_insert(categories, [{"key": key, "added_by": None, "added_at": now} for key in DEFAULT_CATEGORIES])
    if dialect == "postgresql":
        op.execute("ANALYZE tickets")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_table("ticket_categories")
    op.execute("DROP INDEX IF EXISTS ix_tickets_tracking_key")
    op.drop_index("ix_tickets_tenant_category_key", table_name="tickets")
    op.create_index("ix_tickets_tenant_category", "tickets", ["tenant_id", "category"])
    if dialect == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {FIRST_RESPONSE}")
        op.execute("ALTER TABLE tickets DROP COLUMN category_key")
        op.execute(_first_response_index("category"))
        op.execute("DROP FUNCTION IF EXISTS opsdash_key(text)")
        if op.get_bind().dialect.server_version_info >= (14,):
            op.execute("CREATE STATISTICS IF NOT EXISTS st_tickets_category_lower ON (lower(category)) FROM tickets")
    else:
        op.execute("ALTER TABLE tickets DROP COLUMN category_key")
