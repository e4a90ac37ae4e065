"""deadlines ahead of a mark: breaches at a cost bounded by cells, not deadline buckets (issue 20)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30

To count SLA breaches at a clock, data.summaries subtracted from each cell's
pending tickets those whose deadline is still ahead, summing every future
deadline bucket of migration 0009 (86,000 rows at a million tickets, more
as tickets get denser). Two tables replace that sum:

- ``ticket_summary_marks``: per tenant, a mark ``as_of``: an hour's start
  (``-infinity`` for a tenant whose first ticket just arrived: every
  pending deadline lies ahead of it);
- ``ticket_summary_ahead``: per (tenant, ward, category key, status) and SLA
  (``kind``, as in ``ticket_summary_deadlines``): the pending tickets whose
  deadline is at or after the tenant's mark.

The triggers of 0009 keep it in the same statements as the other summaries,
under the same rules (SECURITY DEFINER, rows locked in CELL_ORDER, flagged and
gbv tickets never counted). ``opsdash_summary_advance(upto)`` moves marks to
``upto``'s hour, subtracting the hour buckets they pass over; the reader
subtracts the hour buckets from the mark to its clock's hour and the current
hour's deadlines from the tickets, so figures are exact whether or not the
marks moved (data.summaries).

Concurrency: each trigger locks its tenants' mark rows FOR SHARE (in tenant
order) before writing any summary, and holds them to its commit; the advance
locks marks FOR UPDATE SKIP LOCKED, then (a new READ COMMITTED snapshot) sees
every writer of those tenants committed and none can start until it commits.
It never waits for a writer, unless asked (``wait_for_writers``: a tenant
that writers never leave alone; then the marks table, for a bounded time).
A REPEATABLE READ writer whose snapshot predates a mark's move gets a
serialization failure at that lock (once an hour per tenant at most), never
a wrong count. The build (a bulk load's) and TRUNCATE take the marks table
EXCLUSIVE after ``tickets``, so an advance waits for them, not the reverse.

The upgrade builds the table from the cells (ahead of ``-infinity`` is every
pending deadline) and advances it to the current hour, with writers held
back meanwhile; it reads summary rows only, no ticket. PostgreSQL only.
"""
from __future__ import annotations

import importlib

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

v0009 = importlib.import_module("data.migrations.versions.0009_ticket_summaries")
CELL, CELL_CONFLICT, CELL_ORDER = v0009.CELL, v0009.CELL_CONFLICT, v0009.CELL_ORDER

TABLES = ("ticket_summary_ahead", "ticket_summary_marks")
TABLES_SQL = (
    "CREATE TABLE ticket_summary_marks (tenant_id uuid PRIMARY KEY, as_of timestamptz NOT NULL)",
    """CREATE TABLE ticket_summary_ahead (
    tenant_id uuid NOT NULL, ward_id varchar(64), category_key text NOT NULL, status varchar(32) NOT NULL,
    kind smallint NOT NULL, pending bigint NOT NULL)""",
    f"CREATE UNIQUE INDEX ux_ticket_summary_ahead ON ticket_summary_ahead ({CELL_CONFLICT}, kind)",
)


def marks_sql(tickets: str) -> str:
    """Give each tenant of ``tickets`` not yet known a mark: ``-infinity`` (it has no ahead rows yet)."""
    return f"""\
INSERT INTO ticket_summary_marks (tenant_id, as_of)
SELECT t.tenant_id, '-infinity' FROM (SELECT DISTINCT tenant_id FROM {tickets}) AS t
WHERE NOT EXISTS (SELECT 1 FROM ticket_summary_marks AS m WHERE m.tenant_id = t.tenant_id)
ON CONFLICT (tenant_id) DO NOTHING"""


def lock_marks_sql(sources: list[str]) -> str:
    """Share-lock the marks of every tenant a statement touches, in tenant order, until the commit:
    an advance (FOR UPDATE) neither runs meanwhile nor is missed by what this writes."""
    tenants = " UNION ".join(f"SELECT tenant_id FROM {source}" for source in sources)
    return (f"PERFORM 1 FROM ticket_summary_marks WHERE tenant_id IN ({tenants}) "
            f"ORDER BY tenant_id FOR SHARE")


def ahead_sql(changes: str) -> str:
    """Add ``changes`` to the pending tickets whose deadline is at or after their tenant's mark."""
    return f"""\
WITH changes AS ({changes})
INSERT INTO ticket_summary_ahead AS s ({CELL}, kind, pending)
SELECT {CELL}, d.kind, sum(c.sign)
FROM changes AS c JOIN ticket_summary_marks AS m USING (tenant_id),
LATERAL (VALUES (1, c.sla_response_deadline, c.first_responded_at),
                (2, c.sla_resolution_deadline, c.resolved_at)) AS d (kind, deadline, done)
WHERE d.deadline IS NOT NULL AND d.done IS NULL AND d.deadline >= m.as_of
GROUP BY {CELL}, d.kind HAVING sum(c.sign) <> 0
ORDER BY {CELL_ORDER}, d.kind
ON CONFLICT ({CELL_CONFLICT}, kind) DO UPDATE SET pending = s.pending + excluded.pending"""


def _replace(sql: str) -> str:
    return sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def trigger_function_sql(event: str, schema: str) -> str:
    sources = v0009.TRIGGER_SOURCES[event]
    rows = [source for _, source in sources]
    changes = v0009.changes_sql(sources)
    statements = ([v0009.zones_sql("new_rows"), marks_sql("new_rows")] if event != "delete" else [])
    statements += [lock_marks_sql(rows), *v0009.apply_sql(changes), ahead_sql(changes)]
    if event != "insert":
        statements.append(v0009.PRUNE_SQL)
    body = ";\n".join(statements)
    return f"""\
CREATE OR REPLACE FUNCTION opsdash_summarise_{event}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, {schema}, pg_temp
AS $fn$
BEGIN
{body};
RETURN NULL;
END
$fn$"""


TRUNCATE_FUNCTION_SQL = """\
CREATE OR REPLACE FUNCTION opsdash_summarise_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, {schema}, pg_temp
AS $fn$
BEGIN
    -- The marks stay: nothing pending is ahead of any of them.
    LOCK TABLE ticket_summary_marks IN EXCLUSIVE MODE;
    TRUNCATE ticket_summary_cells, ticket_summary_days, ticket_summary_deadlines, ticket_summary_responses,
             ticket_summary_ahead;
    RETURN NULL;
END
$fn$"""


def build_function_sql(schema: str) -> str:
    """``opsdash_summaries_build()`` again, the ahead rows included, ending with the marks at the current hour."""
    changes = v0009.changes_sql([(1, "tickets")])
    body = ";\n".join([v0009.zones_sql("tickets"), marks_sql("tickets"), *v0009.apply_sql(changes),
                       ahead_sql(changes)])
    return f"""\
CREATE OR REPLACE FUNCTION opsdash_summaries_build() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, {schema}, pg_temp
AS $fn$
BEGIN
    -- Writers wait until the caller commits (readers do not): no ticket may change
    -- between this read and the triggers taking over. Then the marks: an advance waits for this.
    LOCK TABLE tickets IN SHARE ROW EXCLUSIVE MODE;
    LOCK TABLE ticket_summary_marks IN EXCLUSIVE MODE;
    PERFORM pg_catalog.set_config('work_mem', '256MB', true);
    TRUNCATE ticket_summary_cells, ticket_summary_days, ticket_summary_deadlines, ticket_summary_responses,
             ticket_summary_ahead;
{body};
    PERFORM opsdash_summary_advance(pg_catalog.now());
END
$fn$"""


# Moves marks forward to ``upto``'s hour (all tenants', or one's). Returns how many moved.
ADVANCE_FUNCTION_SQL = f"""\
CREATE FUNCTION opsdash_summary_advance(upto timestamptz, tenant uuid DEFAULT NULL,
                                        wait_for_writers boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $fn$
DECLARE
    mark timestamptz := date_trunc('hour', upto AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    moving uuid[];
BEGIN
    -- The next statement must see every commit made before this one's locks: a new snapshot.
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'opsdash_summary_advance runs in READ COMMITTED only';
    END IF;
    -- ``wait_for_writers``: a tenant written to without a pause would be skipped every time
    -- (share locks of overlapping writers never all end). The table lock waits for the writers in progress and
    -- holds new ones back (in turn, unlike a row lock) until this commits; the caller bounds
    -- the wait (lock_timeout).
    IF wait_for_writers THEN
        LOCK TABLE ticket_summary_marks IN EXCLUSIVE MODE;
    END IF;
    -- Writers hold their tenants' marks FOR SHARE until they commit: a mark locked here has no
    -- writer in progress, and no writer starts until this commits. SKIP LOCKED: never wait for
    -- a writer (nor make writers queue behind this); a tenant being written to moves next time.
    SELECT pg_catalog.array_agg(l.tenant_id) INTO moving FROM (
        SELECT m.tenant_id FROM ticket_summary_marks AS m
        WHERE m.as_of < mark AND (tenant IS NULL OR m.tenant_id = tenant)
        ORDER BY m.tenant_id FOR UPDATE SKIP LOCKED) AS l;
    IF moving IS NULL THEN
        RETURN 0;
    END IF;
    -- Pending deadlines in [old mark, new mark) are no longer ahead: their hour buckets, per cell.
    INSERT INTO ticket_summary_ahead AS s ({CELL}, kind, pending)
    SELECT {CELL}, d.kind, -sum(d.pending)
    FROM ticket_summary_deadlines AS d JOIN ticket_summary_marks AS m USING (tenant_id)
    WHERE d.tenant_id = ANY (moving) AND d.hourly AND d.bucket >= m.as_of AND d.bucket < mark
    GROUP BY {CELL}, d.kind HAVING sum(d.pending) <> 0
    ORDER BY {CELL_ORDER}, d.kind
    ON CONFLICT ({CELL_CONFLICT}, kind) DO UPDATE SET pending = s.pending + excluded.pending;
    UPDATE ticket_summary_marks SET as_of = mark WHERE tenant_id = ANY (moving);
    RETURN pg_catalog.cardinality(moving);
END
$fn$"""

#: Every pending deadline is ahead of -infinity: the cells' pending counts, before the first advance.
FROM_CELLS_SQL = f"""\
INSERT INTO ticket_summary_ahead ({CELL}, kind, pending)
SELECT {CELL}, v.kind, v.pending FROM ticket_summary_cells AS c,
LATERAL (VALUES (1, c.response_pending), (2, c.resolution_pending)) AS v (kind, pending)
WHERE v.pending <> 0
ORDER BY {CELL_ORDER}, v.kind"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.exec_driver_sql("SELECT pg_catalog.quote_ident(pg_catalog.current_schema())").scalar_one()
    for statement in TABLES_SQL:
        op.execute(statement)
    op.execute(ADVANCE_FUNCTION_SQL.format(schema=schema))
    op.execute("REVOKE ALL ON FUNCTION opsdash_summary_advance(timestamptz, uuid, boolean) FROM PUBLIC")
    # Writers wait from here to the commit (readers do not): the old triggers stop with the new tables empty.
    op.execute("LOCK TABLE tickets IN SHARE ROW EXCLUSIVE MODE")
    for event in v0009.TRIGGER_SOURCES:
        op.execute(trigger_function_sql(event, schema))
    op.execute(TRUNCATE_FUNCTION_SQL.format(schema=schema))
    op.execute(build_function_sql(schema))
    op.execute("INSERT INTO ticket_summary_marks (tenant_id, as_of) SELECT tenant_id, '-infinity' "
               "FROM ticket_summary_zones")
    op.execute(FROM_CELLS_SQL)
    op.execute("SELECT opsdash_summary_advance(pg_catalog.now())")
    op.execute(f"ANALYZE {', '.join(TABLES)}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.exec_driver_sql("SELECT pg_catalog.quote_ident(pg_catalog.current_schema())").scalar_one()
    op.execute("LOCK TABLE tickets IN SHARE ROW EXCLUSIVE MODE")
    for event in v0009.TRIGGER_SOURCES:
        op.execute(_replace(v0009.trigger_function_sql(event, schema)))
    op.execute(_replace(v0009.TRUNCATE_FUNCTION_SQL.format(schema=schema)))
    op.execute(_replace(v0009.build_function_sql(schema)))
    op.execute("DROP FUNCTION IF EXISTS opsdash_summary_advance(timestamptz, uuid, boolean)")
    op.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
