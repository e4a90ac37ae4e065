"""trigram indexes for free-text search (PostgreSQL only)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

The dashboard's search is ``ILIKE '%term%'`` over tracking number,
description and address; no B-tree index can serve a leading wildcard, so
without these every search scans all of a municipality's tickets. pg_trgm GIN
indexes serve ILIKE directly (figures: docs/performance.md, "Search").

- SQLite: nothing to do (no pg_trgm; demo-sized data scans fast anyway).
- PostgreSQL without the extension or the right to create it (e.g. the
  ticketing system's database with a restricted role): the migration logs
  a warning and skips, so ``opsdash init-db`` still succeeds; search stays
  correct, only slower.

The indexes are not declared in models.py on purpose: they are PostgreSQL
only, and a plain Index there would build a useless B-tree on SQLite.
"""
from __future__ import annotations

import logging

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")
INDEXES = {
    "ix_tickets_description_trgm": "description",
    "ix_tickets_tracking_number_trgm": "tracking_number",
    "ix_tickets_address_trgm": "address",
}


def _trgm_available(connection: sa.Connection) -> bool:
    # A savepoint, so a refused CREATE EXTENSION does not abort the migration's transaction.
    savepoint = connection.begin_nested()
    try:
        connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        log.warning("pg_trgm is not available (%s); skipping the search indexes: search works, without an index",
                    str(exc.orig).strip().splitlines()[0] if exc.orig else exc)
        return False
    savepoint.commit()
    return True


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql" or not _trgm_available(connection):
        return
    for name, column in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON tickets USING gin ({column} gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
