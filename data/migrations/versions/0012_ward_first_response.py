"""a ward's response times in order: its median from an index, not a sort (issue 20)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

A ward's "median first response" (a councillor's dashboard, a manager's ward
filter) sorted every responded ticket of the ward, fetched row by row through
the ward index: at 10 million tickets (110 wards, ~88,000 a ward) 0.34 s
warm and 0.8-2.0 s cold, on every councillor's sign-in. Over this index the
count and the middle one or two are read in order, index-only, as 0004 does
for a whole municipality.

- Keyed by tenant, ward and exactly 0004's response-time expression; only
  responded tickets (partial).
- INCLUDE: what the sensitivity gate, the status and category filters and
  the expression read, so every single-ward read is index-only.
- ~70 MB per million tickets; built in ~1.5 s per million on the 2-core
  bench machine (a seed into an empty table builds it after the COPY).
- SQLite (the demo): nothing.
"""
from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

INDEX = "ix_tickets_ward_first_response"
#: 0004's key expression: data.aggregates.response_seconds() renders exactly this.
RESPONSE_SECONDS = "date_part('epoch', first_responded_at - created_at)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON tickets (tenant_id, ward_id, ({RESPONSE_SECONDS})) "
                   "INCLUDE (is_sensitive, category_key, status, created_at, first_responded_at) "
                   "WHERE first_responded_at IS NOT NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
