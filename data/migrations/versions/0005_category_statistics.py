"""statistics on lower(category), so the planner knows how common a category is

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

The category filter compares ``lower(category)`` (categories match in any
case, data.tickets.filter_conditions). PostgreSQL keeps statistics on
columns, not on expressions, so it guessed 0.5 % for every category where
"water" is a quarter of all tickets. With a ward and a status on top, it
expected 4 rows of a million and read the whole status's bitmap (76,000
rows) to sort them, rather than walking the ward's index newest first: the
table's first page of status open + water + one ward took 122 ms where the
ward's index answers in under 5 ms (docs/performance.md, "Dashboard queries").

``CREATE STATISTICS`` on the expression makes ANALYZE (autovacuum's, or
data.seed's after a load) sample it like a column. It costs no write time
and no index. Expression statistics exist from PostgreSQL 14 on; on an older
server this migration changes nothing and says so.

Only this expression: statistics on the sensitivity flag's expression
(``coalesce(is_sensitive, false)``) would also correct the planner's
estimates, by a factor of two, but then it stops running large filtered
scans in parallel, which made the "water" figures 1.5 times slower alone
(233 -> 353 ms measured).

SQLite (the demo): nothing.
"""
from __future__ import annotations

import logging

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATISTICS = "st_tickets_category_lower"
log = logging.getLogger("alembic.runtime.migration")


def _supported() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    if bind.dialect.server_version_info < (14,):
        log.warning("PostgreSQL %s has no expression statistics: category filters keep the planner's guess",
                    ".".join(map(str, bind.dialect.server_version_info)))
        return False
    return True


def upgrade() -> None:
    if _supported():
        op.execute(f"CREATE STATISTICS IF NOT EXISTS {STATISTICS} ON (lower(category)) FROM tickets")
        op.execute("ANALYZE tickets")  # now, rather than at autovacuum's next visit


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP STATISTICS IF EXISTS {STATISTICS}")
