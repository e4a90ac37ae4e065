"""Query plans the speed figures rely on, checked on a fresh PostgreSQL database (not timed).

The tests check what the queries return; which index PostgreSQL picks for them is
the planner's business and changes with table size, statistics and version, so it
is checked here, where a missed plan is a figure to look at rather than a failed
build. Each check prints the plan's key line and OK or MISSED; the exit status is 1
when any plan is missed (``make bench`` reports it).

- search: the dashboards' free-text condition can use the trigram index (0002/0003);
- median: the median's statements on ``tickets`` (one since 0009: the summaries'
  histogram gives the middle's bucket) are index-only scans of 0004's index
  after a bulk load, without a sort; a councillor's (one ward: count, then the
  middle) of 0012's;
- category estimate: the planner's row estimate for a category filter is within 2x
  of the truth (statistics of ``category_key``, 0006), so it does not plan for a
  handful of rows;
- deadlines ahead: with the marks at the current hour (0013), the figures read the
  cells' ahead rows and no deadline bucket, however many lie ahead.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, event, func, select, text  # noqa: E402

from data.aggregates import median_first_response_s, ticket_figures  # noqa: E402
from data.db import make_engine, migrate  # noqa: E402
from data.filters import TicketFilters  # noqa: E402
from data.models import Ticket  # noqa: E402
from data.scope import Scope  # noqa: E402
from data.seed import insert_tickets  # noqa: E402
from data.summaries import advance_marks  # noqa: E402
from data.tickets import filter_conditions  # noqa: E402
from tests.helpers.databases import copy_row, empty_pg_database, ticket_record  # noqa: E402

TICKETS = 20_000
#: Two in five are water, spelled two ways (one key).
CATEGORIES = ("Water", "water\u200b", "roads", "electricity", "waste")


def seeded(engine: Engine, tenant: uuid.UUID) -> None:
    def rows():
        for i in range(TICKETS):
            record = ticket_record(tenant, description=f"row {i} burst pipe" if i % 10 == 0 else f"row {i}",
                                   category=CATEGORIES[i % len(CATEGORIES)])
            if i % 4:  # three in four answered, after i seconds
                record["first_responded_at"] = record["created_at"] + timedelta(seconds=i)
            # Resolution deadlines over the next two weeks: ~300 hour buckets and 14 day buckets ahead.
            record["sla_resolution_deadline"] = record["created_at"] + timedelta(seconds=60 * i)
            yield copy_row(record)

    insert_tickets(engine, rows())
    with engine.begin() as conn:
        conn.execute(text("ANALYZE tickets"))


def plan_of(engine: Engine, statement: str, parameters=None, options: str = "COSTS OFF",
            no_seqscan: bool = True) -> str:
    with engine.connect() as conn:
        if no_seqscan:
            # 20,000 short rows: the table is hardly bigger than an index. At a million tickets the
            # planner takes the indexes on its own (bench_dashboard.py's SQL profile).
            conn.execute(text("SET enable_seqscan = off"))
        return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN ({options}) {statement}", parameters or {}))


def statements_of(engine: Engine, call, marker: str) -> list[tuple[str, dict]]:
    """The SQL statements (with their parameters) that ``call()`` sends which contain ``marker``."""
    statements: list[tuple[str, dict]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if marker in statement:
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return statements


def report(name: str, ok: bool, detail: str) -> bool:
    print(f"{'OK    ' if ok else 'MISSED'} {name}: {detail}", flush=True)
    return ok


def check_search(engine: Engine, scope: Scope) -> bool:
    stmt = select(Ticket.id).where(*filter_conditions(scope, TicketFilters(search="Burst Pipe")))
    compiled = stmt.compile(engine)
    plan = plan_of(engine, str(compiled), compiled.params)
    return report("search uses ix_tickets_search_text_trgm", "ix_tickets_search_text_trgm" in plan,
                  next((line.strip() for line in plan.splitlines() if "trgm" in line), plan.splitlines()[0]))


def check_median(engine: Engine, scope: Scope, index: str = "ix_tickets_first_response") -> bool:
    statements = statements_of(engine, lambda: median_first_response_s(engine, scope), "first_responded_at")
    ok = bool(statements)
    for i, (statement, parameters) in enumerate(statements, 1):
        plan = plan_of(engine, statement, parameters, options="ANALYZE, COSTS OFF")
        index_only = f"Index Only Scan using {index} " in plan
        no_heap = "Heap Fetches: 0" in plan
        no_sort = "Sort" not in plan
        ok &= report(f"{scope.role.value} median statement {i}/{len(statements)}: index-only ({index}), no heap fetches, "
                     "no sort",
                     index_only and no_heap and no_sort,
                     f"index only {index_only}, heap fetches 0 {no_heap}, no sort {no_sort}")
    return ok


def check_category_estimate(engine: Engine, scope: Scope) -> bool:
    statement = select(Ticket.id).where(*filter_conditions(scope, TicketFilters(categories=("water",))))
    sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        estimate = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql).scalar_one()[0]["Plan"]["Plan Rows"]
        actual = conn.execute(statement.with_only_columns(func.count())).scalar_one()
    return report("category filter row estimate within 2x", actual / 2 <= estimate <= actual * 2,
                  f"estimate {estimate:,} rows, actual {actual:,}")


def check_deadlines_ahead(engine: Engine, scope: Scope) -> bool:
    advance_marks(engine)
    statements = statements_of(engine, lambda: ticket_figures(engine, scope, None, ("category", "status", "ward_id")),
                               "created_today")
    if not statements:
        return report("deadlines ahead", False, "the figures did not read the summaries")
    statement, parameters = statements[0]
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).scalar_one()
    rows: dict[str, int] = {}

    def walk(node: dict) -> None:
        if "Relation Name" in node:
            name = node["Relation Name"]
            rows[name] = rows.get(name, 0) + int(node["Actual Rows"] * node.get("Actual Loops", 1))
        for child in node.get("Plans", ()):
            walk(child)

    walk((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    with engine.connect() as conn:
        exist = conn.execute(text("SELECT count(*) FROM ticket_summary_deadlines")).scalar_one()
    return report("figures read the deadlines ahead of the mark, no deadline bucket",
                  "ticket_summary_ahead" in rows and not rows.get("ticket_summary_deadlines"),
                  f"ahead rows {rows.get('ticket_summary_ahead')}, deadline rows read "
                  f"{rows.get('ticket_summary_deadlines', 0)} of {exist:,}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for run_all.py (this check is always small)")
    parser.parse_args()
    with empty_pg_database() as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            tenant = uuid.uuid4()
            seeded(engine, tenant)
            scope = Scope(municipality_id=tenant, role="manager")
            councillor = Scope(municipality_id=tenant, role="ward_councillor", ward_id="W1")  # every row's ward
            results = [check_search(engine, scope), check_median(engine, scope),
                       check_median(engine, councillor, "ix_tickets_ward_first_response"),
                       check_category_estimate(engine, scope), check_deadlines_ahead(engine, scope)]
        finally:
            engine.dispose()
    print(f"plans: {sum(results)} of {len(results)} as expected", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
