"""an index that keeps each municipality's response times in order

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

The dashboard's "median first response" sorted every responded ticket of the
municipality on each load: at 1,000,000 tickets ~0.45-0.6 s of database CPU,
as much as the rest of the figures' scan, for every sign-in and every live
refresh of a whole-municipality view (a wall screen's, for one). Over this
index the median of a whole municipality is read instead: count the
responded tickets, then step to the middle one, both index-only scans
(0.12 s + 0.06 s measured, docs/performance.md, "Dashboard queries").

- Keyed by tenant and the response time in seconds, exactly the expression
  ``data.aggregates`` orders by; only responded tickets (a partial index).
- INCLUDE holds what the sensitivity gate and the expression read
  (is_sensitive, category, created_at, first_responded_at): PostgreSQL
  takes an index-only scan only when every column a query names is in the
  index, an expression's inputs included.
- Index-only scans skip the heap only on pages the visibility map marks
  all-visible: autovacuum keeps that up; ``data.seed`` vacuums after a load.
- ~63 MB per million tickets. Building it locks writes to tickets for about a
  second per million rows (1.2 s measured on the 2-core bench machine).
- SQLite (the demo): nothing; its tickets are few and sorted in memory.
"""
from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEX = "ix_tickets_first_response"
#: The key expression; data.aggregates.response_seconds() must render exactly this.
RESPONSE_SECONDS = "date_part('epoch', first_responded_at - created_at)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON tickets (tenant_id, ({RESPONSE_SECONDS})) "
                   "INCLUDE (is_sensitive, category, created_at, first_responded_at) "
                   "WHERE first_responded_at IS NOT NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
