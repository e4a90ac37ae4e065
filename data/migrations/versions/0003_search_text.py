"""one lower-cased search column for free-text search

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Search used to be ``ILIKE '%term%'`` on tracking number, description and
address: three case-folding comparisons per candidate row. At 1,000,000
tickets a common word ("water": 192,213 matches) cost ~1 s of database CPU
per query, and a dashboard runs three queries per filter change. Measured on
one core over the full table: three ILIKEs 1.74 s, one LIKE on pre-lowered
text 0.28 s.

``search_text`` is ``lower(tracking_number || US || description || US ||
address)``, kept by the database itself (a generated column, so every writer,
the ticketing system included, keeps it right). US is the unit separator
(chr 31), which search text can never contain (``TicketFilters`` collapses
whitespace, and str.split() counts US as whitespace), so a match never spans
two fields. One trigram index on it replaces the three of 0002.

- PostgreSQL: a STORED column. Adding it rewrites the table once (about 10 s
  per million tickets, with the table locked meanwhile).
- SQLite (the demo): a VIRTUAL column (SQLite cannot add a stored one to an
  existing table), computed when read; its lower() is the Unicode-aware one
  data.db installs on every connection.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_INDEXES = {
    "ix_tickets_description_trgm": "description",
    "ix_tickets_tracking_number_trgm": "tracking_number",
    "ix_tickets_address_trgm": "address",
}
INDEX = "ix_tickets_search_text_trgm"


def expression(dialect: str) -> str:
    sep = "chr(31)" if dialect == "postgresql" else "char(31)"
    return (f"lower(coalesce(tracking_number, '') || {sep} || coalesce(description, '') || {sep} "
            f"|| coalesce(address, ''))")


def _has_trgm(connection: sa.Connection) -> bool:
    return connection.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first() is not None


def upgrade() -> None:
    connection = op.get_bind()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        op.execute(f"ALTER TABLE tickets ADD COLUMN search_text text GENERATED ALWAYS AS ({expression(dialect)}) STORED")
        if _has_trgm(connection):  # 0002 installed it, or logged why not
            op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON tickets USING gin (search_text gin_trgm_ops)")
            for name in OLD_INDEXES:
                op.execute(f"DROP INDEX IF EXISTS {name}")
    else:
        op.execute(f"ALTER TABLE tickets ADD COLUMN search_text TEXT GENERATED ALWAYS AS ({expression(dialect)}) VIRTUAL")


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        if _has_trgm(connection):
            for name, column in OLD_INDEXES.items():
                op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON tickets USING gin ({column} gin_trgm_ops)")
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.execute("ALTER TABLE tickets DROP COLUMN search_text")
