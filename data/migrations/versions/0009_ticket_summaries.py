"""summary tables kept by PostgreSQL as tickets change: figures whose cost does not grow with history (issue 20)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

A whole municipality's figures read every ticket it ever had: at 10 million
tickets 3.5 s, growing with the table. These tables hold the same counts,
kept right by statement-level triggers on ``tickets`` (so every writer keeps
them right, the ticketing system included, COPY too), and read by
data.summaries:

- ``ticket_summary_cells``: per (tenant, ward, category key, status):
  tickets, resolved ones, and per SLA (response, resolution) the tickets
  done late and those still pending with a deadline.
- ``ticket_summary_days``: per cell and *local* day (the tenant's time zone,
  ``ticket_summary_zones``): tickets created, resolved, and "closed" (the day
  of the later of created and resolved: what the backlog needs).
- ``ticket_summary_deadlines``: pending tickets per cell, SLA and deadline,
  by UTC hour and by UTC day: how many deadlines still lie ahead of a clock.
- ``ticket_summary_responses``: per (tenant, category key, status) a
  histogram of first-response times in 300-second buckets.

Rows are keyed by ``category_key``: visibility (known categories) is applied
when reading, so ``opsdash category add`` shows its tickets at once. A ticket
flagged sensitive, or of category gbv, is never counted: the triggers leave it
out, and an UPDATE that flags one takes its counts away in the same statement.

Nobody but the owner (the app role) may read them: ``opsdash db grant``
gives an analyst ``tickets`` under row-level security and nothing here. The
trigger functions are SECURITY DEFINER (a ticketing system writing with a
role of its own needs no rights on these tables) and callable by nobody.

PostgreSQL only: SQLite (the demo) keeps scanning. The build reads every
ticket once, under a lock that holds writers (not readers) back meanwhile:
docs/performance.md gives the time at 1 and 10 million tickets.
"""
from __future__ import annotations

from alembic import op

from data.sensitivity import SENSITIVE_KEY

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: The time zone of a tenant without a usable one (data.settings.DEFAULT_TIMEZONE).
DEFAULT_ZONE = "Africa/Johannesburg"
#: Width of a first-response histogram bucket, seconds (data.summaries.RESPONSE_BUCKET_S).
RESPONSE_BUCKET_S = 300
#: A cell's key; ``ward_id`` may be NULL, so the unique indexes key it as two expressions.
CELL = "tenant_id, ward_id, category_key, status"
CELL_CONFLICT = "tenant_id, (coalesce(ward_id, '')), (ward_id IS NULL), category_key, status"
# The order writers lock summary rows in (the same in every transaction: no deadlocks). Byte order:
# the database's collation would cost a strcoll() per comparison (a third of the build's time).
CELL_ORDER = ("tenant_id, coalesce(ward_id, '') COLLATE \"C\", ward_id IS NULL, category_key COLLATE \"C\", "
              "status COLLATE \"C\"")
#: What the triggers read of a ticket.
COLUMNS = ("tenant_id, ward_id, category_key, status, created_at, resolved_at, first_responded_at, "
           "sla_response_deadline, sla_resolution_deadline")
TABLES = ("ticket_summary_cells", "ticket_summary_days", "ticket_summary_deadlines", "ticket_summary_responses",
          "ticket_summary_zones")
DUE_INDEXES = {
    # The deadlines of the current hour are counted from the tickets themselves (data.summaries).
    "ix_tickets_response_due": "tickets (tenant_id, sla_response_deadline) "
                               "WHERE first_responded_at IS NULL AND sla_response_deadline IS NOT NULL",
    "ix_tickets_resolution_due": "tickets (tenant_id, sla_resolution_deadline) "
                                 "WHERE resolved_at IS NULL AND sla_resolution_deadline IS NOT NULL",
}

TABLES_SQL = (
    "CREATE TABLE ticket_summary_zones (tenant_id uuid PRIMARY KEY, timezone text NOT NULL)",
    """CREATE TABLE ticket_summary_cells (
    tenant_id uuid NOT NULL, ward_id varchar(64), category_key text NOT NULL, status varchar(32) NOT NULL,
    tickets bigint NOT NULL, resolved bigint NOT NULL,
    response_late bigint NOT NULL, response_pending bigint NOT NULL,
    resolution_late bigint NOT NULL, resolution_pending bigint NOT NULL)""",
    f"CREATE UNIQUE INDEX ux_ticket_summary_cells ON ticket_summary_cells ({CELL_CONFLICT})",
    """CREATE TABLE ticket_summary_days (
    tenant_id uuid NOT NULL, ward_id varchar(64), category_key text NOT NULL, status varchar(32) NOT NULL,
    day date NOT NULL, created bigint NOT NULL, resolved bigint NOT NULL, closed bigint NOT NULL)""",
    f"CREATE UNIQUE INDEX ux_ticket_summary_days ON ticket_summary_days ({CELL_CONFLICT}, day)",
    "CREATE INDEX ix_ticket_summary_days_tenant_day ON ticket_summary_days (tenant_id, day)",
    """CREATE TABLE ticket_summary_deadlines (
    tenant_id uuid NOT NULL, ward_id varchar(64), category_key text NOT NULL, status varchar(32) NOT NULL,
    kind smallint NOT NULL, hourly boolean NOT NULL, bucket timestamptz NOT NULL, pending bigint NOT NULL)""",
    f"CREATE UNIQUE INDEX ux_ticket_summary_deadlines ON ticket_summary_deadlines ({CELL_CONFLICT}, kind, hourly, bucket)",
    "CREATE INDEX ix_ticket_summary_deadlines_tenant_bucket ON ticket_summary_deadlines (tenant_id, hourly, bucket)",
    """CREATE TABLE ticket_summary_responses (
    tenant_id uuid NOT NULL, category_key text NOT NULL, status varchar(32) NOT NULL,
    bucket bigint NOT NULL, responded bigint NOT NULL,
    PRIMARY KEY (tenant_id, category_key, status, bucket))""",
)

# The zone a tenant's local days are counted in: its municipality's, when PostgreSQL knows
# the name; else the default. data.summaries compares it with the Scope's and scans on a mismatch.
ZONE_FUNCTION_SQL = f"""\
CREATE FUNCTION opsdash_summary_zone(tenant uuid) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $fn$
DECLARE
    zone text;
BEGIN
    SELECT m.timezone INTO zone FROM municipalities AS m WHERE m.id = tenant;
    IF zone IS NULL THEN
        RETURN '{DEFAULT_ZONE}';
    END IF;
    BEGIN
        PERFORM pg_catalog.now() AT TIME ZONE zone;
    EXCEPTION WHEN others THEN
        RETURN '{DEFAULT_ZONE}';
    END;
    RETURN zone;
END
$fn$"""


def _count(condition: str) -> str:
    return f"coalesce(sum(sign) FILTER (WHERE {condition}), 0)"


def _late(deadline: str, done: str) -> str:
    return f"{deadline} IS NOT NULL AND {done} IS NOT NULL AND {done} > {deadline}"


def _pending(deadline: str, done: str) -> str:
    return f"{deadline} IS NOT NULL AND {done} IS NULL"


_CELL_MEASURES = {
    "tickets": "sum(sign)",
    "resolved": _count("resolved_at IS NOT NULL"),
    "response_late": _count(_late("sla_response_deadline", "first_responded_at")),
    "response_pending": _count(_pending("sla_response_deadline", "first_responded_at")),
    "resolution_late": _count(_late("sla_resolution_deadline", "resolved_at")),
    "resolution_pending": _count(_pending("sla_resolution_deadline", "resolved_at")),
}


def _nonzero(names) -> str:
    return " OR ".join(f"{n} <> 0" for n in names)


def _add(names) -> str:
    return ", ".join(f"{n} = s.{n} + excluded.{n}" for n in names)


def changes_sql(sources: list[tuple[int, str]]) -> str:
    """The rows a statement added (+1) or took away (-1), as the summaries count them: never a flagged
    one, nor gbv (which ticket_categories refuses, so it could never be shown). Other unknown keys are
    counted and stay hidden when read, until an admin adds the category."""
    return " UNION ALL ".join(
        f"SELECT {sign} AS sign, {COLUMNS} FROM {source} "
        f"WHERE coalesce(is_sensitive, false) = false AND category_key IS NOT NULL AND category_key <> '{SENSITIVE_KEY}'"
        for sign, source in sources)


def apply_sql(changes: str) -> list[str]:
    """Statements that add ``changes`` to every summary table, each in key order (no deadlocks between writers)."""
    measures = list(_CELL_MEASURES)
    cells = f"""\
WITH changes AS ({changes})
INSERT INTO ticket_summary_cells AS s ({CELL}, {", ".join(measures)})
SELECT {CELL}, {", ".join(_CELL_MEASURES.values())} FROM changes
GROUP BY {CELL} HAVING {_nonzero(_CELL_MEASURES.values())}
ORDER BY {CELL_ORDER}
ON CONFLICT ({CELL_CONFLICT}) DO UPDATE SET {_add(measures)}"""
    # One pass over the changes: each row gives its created day, its resolved day and the day of
    # the later of the two (LATERAL VALUES; a UNION would read a materialised copy three times).
    days = f"""\
WITH changes AS ({changes})
INSERT INTO ticket_summary_days AS s ({CELL}, day, created, resolved, closed)
SELECT {CELL}, v.day, sum(v.created), sum(v.resolved), sum(v.closed)
FROM changes AS c JOIN ticket_summary_zones AS z USING (tenant_id),
LATERAL (VALUES ((c.created_at AT TIME ZONE z.timezone)::date, c.sign, 0, 0),
                ((c.resolved_at AT TIME ZONE z.timezone)::date, 0, c.sign, 0),
                ((greatest(c.created_at, c.resolved_at) AT TIME ZONE z.timezone)::date, 0, 0,
                 CASE WHEN c.resolved_at IS NOT NULL THEN c.sign ELSE 0 END)) AS v (day, created, resolved, closed)
WHERE v.day IS NOT NULL
GROUP BY {CELL}, v.day HAVING {_nonzero(("sum(v.created)", "sum(v.resolved)", "sum(v.closed)"))}
ORDER BY {CELL_ORDER}, v.day
ON CONFLICT ({CELL_CONFLICT}, day) DO UPDATE SET {_add(("created", "resolved", "closed"))}"""
    # Each pending deadline counts in its UTC hour and in its UTC day.
    deadlines = f"""\
WITH changes AS ({changes})
INSERT INTO ticket_summary_deadlines AS s ({CELL}, kind, hourly, bucket, pending)
SELECT {CELL}, v.kind, v.hourly, v.bucket, sum(sign)
FROM changes AS c,
LATERAL (VALUES (1, c.sla_response_deadline, c.first_responded_at),
                (2, c.sla_resolution_deadline, c.resolved_at)) AS d (kind, deadline, done),
LATERAL (VALUES (d.kind, true, date_trunc('hour', d.deadline AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'),
                (d.kind, false, date_trunc('day', d.deadline AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'))
        AS v (kind, hourly, bucket)
WHERE {_pending("d.deadline", "d.done")}
GROUP BY {CELL}, v.kind, v.hourly, v.bucket HAVING sum(sign) <> 0
ORDER BY {CELL_ORDER}, v.kind, v.hourly, v.bucket
ON CONFLICT ({CELL_CONFLICT}, kind, hourly, bucket) DO UPDATE SET pending = s.pending + excluded.pending"""
    # The same expression as data.aggregates.response_seconds (and index ix_tickets_first_response).
    bucket = f"floor(date_part('epoch', first_responded_at - created_at) / {RESPONSE_BUCKET_S})::bigint"
    responses = f"""\
WITH changes AS ({changes})
INSERT INTO ticket_summary_responses AS s (tenant_id, category_key, status, bucket, responded)
SELECT tenant_id, category_key, status, {bucket}, sum(sign) FROM changes
WHERE first_responded_at IS NOT NULL
GROUP BY 1, 2, 3, 4 HAVING sum(sign) <> 0
ORDER BY tenant_id, category_key COLLATE "C", status COLLATE "C", 4
ON CONFLICT (tenant_id, category_key, status, bucket) DO UPDATE SET responded = s.responded + excluded.responded"""
    return [cells, days, deadlines, responses]


def zones_sql(tickets: str) -> str:
    """Give each tenant of ``tickets`` not yet known a zone (before the day rows are counted)."""
    return f"""\
INSERT INTO ticket_summary_zones (tenant_id, timezone)
SELECT t.tenant_id, opsdash_summary_zone(t.tenant_id) FROM (SELECT DISTINCT tenant_id FROM {tickets}) AS t
WHERE NOT EXISTS (SELECT 1 FROM ticket_summary_zones AS z WHERE z.tenant_id = t.tenant_id)
ON CONFLICT (tenant_id) DO NOTHING"""


# Deadline rows of tickets no longer pending would pile up at zero as history grows: an UPDATE or
# DELETE removes the ones it emptied (rows that other tables' zeros leave are bounded by the cells).
PRUNE_SQL = f"""\
DELETE FROM ticket_summary_deadlines AS s
USING (SELECT DISTINCT tenant_id, ward_id, category_key, status FROM old_rows) AS o
WHERE s.pending = 0 AND s.tenant_id = o.tenant_id AND coalesce(s.ward_id, '') = coalesce(o.ward_id, '')
  AND (s.ward_id IS NULL) = (o.ward_id IS NULL) AND s.category_key = o.category_key AND s.status = o.status"""

TRIGGER_SOURCES = {
    "insert": [(1, "new_rows")],
    "update": [(-1, "old_rows"), (1, "new_rows")],
    "delete": [(-1, "old_rows")],
}
REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS new_rows",
    "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "REFERENCING OLD TABLE AS old_rows",
}


def trigger_function_sql(event: str, schema: str) -> str:
    statements = ([zones_sql("new_rows")] if event != "delete" else []) + apply_sql(changes_sql(TRIGGER_SOURCES[event]))
    if event != "insert":
        statements.append(PRUNE_SQL)
    body = ";\n".join(statements)
    # SECURITY DEFINER: whoever writes tickets keeps the summaries without any right on them.
    return f"""\
CREATE FUNCTION opsdash_summarise_{event}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, {schema}, pg_temp
AS $fn$
BEGIN
{body};
RETURN NULL;
END
$fn$"""


TRUNCATE_FUNCTION_SQL = """\
CREATE FUNCTION opsdash_summarise_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, {schema}, pg_temp
AS $fn$
BEGIN
    TRUNCATE ticket_summary_cells, ticket_summary_days, ticket_summary_deadlines, ticket_summary_responses;
    RETURN NULL;
END
$fn$"""


def rebuild_days_sql() -> str:
    """A tenant's day rows again, in the zone now recorded for it (the argument ``tenant``)."""
    changes = changes_sql([(1, "tickets")]) + " AND tenant_id = tenant"
    days = apply_sql(changes)[1]
    return days


# A municipality's time zone changed (or its row arrived after its first tickets): its local
# days move, so its day rows are counted again, with ticket writers held back meanwhile.
ZONE_CHANGED_FUNCTION_SQL = """\
CREATE FUNCTION opsdash_summary_zone_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, {schema}, pg_temp
AS $fn$
DECLARE
    tenant uuid := NEW.id;
    zone text := opsdash_summary_zone(NEW.id);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ticket_summary_zones AS z WHERE z.tenant_id = tenant AND z.timezone <> zone) THEN
        RETURN NULL;
    END IF;
    LOCK TABLE tickets IN SHARE ROW EXCLUSIVE MODE;
    UPDATE ticket_summary_zones SET timezone = zone WHERE tenant_id = tenant;
    DELETE FROM ticket_summary_days WHERE tenant_id = tenant;
{rebuild};
    RETURN NULL;
END
$fn$"""

def build_function_sql(schema: str) -> str:
    """``opsdash_summaries_build()``: every summary counted again from the tickets.

    The migration's build, and a bulk load's (data.seed.insert_tickets into an empty
    table: the insert trigger off during the COPY, then this, in the same transaction).
    """
    body = ";\n".join([zones_sql("tickets"), *apply_sql(changes_sql([(1, "tickets")]))])
    return f"""\
CREATE FUNCTION opsdash_summaries_build() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, {schema}, pg_temp
AS $fn$
BEGIN
    -- Writers wait until the caller commits (readers do not): no ticket may change
    -- between this read and the triggers taking over.
    LOCK TABLE tickets IN SHARE ROW EXCLUSIVE MODE;
    -- Room to group every ticket in memory (this transaction only): at 1M tickets the default
    -- 4 MB spilled the groups and their sort to disk.
    PERFORM pg_catalog.set_config('work_mem', '256MB', true);
    TRUNCATE ticket_summary_cells, ticket_summary_days, ticket_summary_deadlines, ticket_summary_responses;
{body};
END
$fn$"""


TRIGGERS_SQL = (
    *(f"CREATE TRIGGER opsdash_summarise_{event} AFTER {event.upper()} ON tickets {REFERENCING[event]} "
      f"FOR EACH STATEMENT EXECUTE FUNCTION opsdash_summarise_{event}()" for event in TRIGGER_SOURCES),
    "CREATE TRIGGER opsdash_summarise_truncate AFTER TRUNCATE ON tickets "
    "FOR EACH STATEMENT EXECUTE FUNCTION opsdash_summarise_truncate()",
    "CREATE TRIGGER opsdash_summary_zone AFTER INSERT OR UPDATE OF timezone ON municipalities "
    "FOR EACH ROW EXECUTE FUNCTION opsdash_summary_zone_changed()",
)
FUNCTIONS = ("opsdash_summarise_insert()", "opsdash_summarise_update()", "opsdash_summarise_delete()",
             "opsdash_summarise_truncate()", "opsdash_summary_zone_changed()", "opsdash_summaries_build()",
             "opsdash_summary_zone(uuid)")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.exec_driver_sql("SELECT pg_catalog.quote_ident(pg_catalog.current_schema())").scalar_one()
    for statement in TABLES_SQL:
        op.execute(statement)
    op.execute(ZONE_FUNCTION_SQL.format(schema=schema))
    for event in TRIGGER_SOURCES:
        op.execute(trigger_function_sql(event, schema))
    op.execute(TRUNCATE_FUNCTION_SQL.format(schema=schema))
    op.execute(ZONE_CHANGED_FUNCTION_SQL.format(schema=schema, rebuild=rebuild_days_sql()))
    op.execute(build_function_sql(schema))
    for function in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
    # Writers wait from here to the commit (readers do not): see opsdash_summaries_build.
    op.execute("LOCK TABLE tickets IN SHARE ROW EXCLUSIVE MODE")
    for name, definition in DUE_INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {definition}")
    for statement in TRIGGERS_SQL:
        op.execute(statement)
    op.execute("SELECT opsdash_summaries_build()")
    op.execute(f"ANALYZE {', '.join(TABLES)}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS opsdash_summary_zone ON municipalities")
    for event in (*TRIGGER_SOURCES, "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS opsdash_summarise_{event} ON tickets")
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    for name in DUE_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
