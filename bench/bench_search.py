"""Free-text search on PostgreSQL with and without the pg_trgm GIN index on ``search_text``.

Seeds a throwaway database (1M tickets; ``--quick``: 100k), then times the
dashboard's two search queries (the count and the first table page, both
from ``scoped_select``) for a rare, a medium and a common search term,
first without and then with the trigram index of migration 0003 (one index on\n``search_text``, which replaced 0002's three).

    python bench/bench_search.py [--quick] [--pg-url ...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_seed import DEFAULT_PG_URL, throwaway_database  # noqa: E402
from sqlalchemy import text  # noqa: E402

from data import TicketFilters, count_tickets, ticket_page  # noqa: E402
from data.scope import Scope  # noqa: E402
from data.seed import seed  # noqa: E402
from data.tickets import scoped_select  # noqa: E402

TRGM_INDEXES = ("ix_tickets_search_text_trgm",)


def timed(fn, repeat: int = 5) -> float:
    """Median milliseconds of ``repeat`` warm runs."""
    fn()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def explain(engine, scope: Scope, term: str, label: str) -> None:
    """EXPLAIN ANALYZE of the first-page query: its scan nodes and execution time."""
    stmt = scoped_select(scope, TicketFilters(search=term)).limit(50)
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        plan = [row[0] for row in conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))]
    nodes = sorted({line.strip().lstrip("-> ").split("  ")[0].split(" on ")[0] + (
        " on " + line.split(" on ")[1].split()[0] if " on " in line else "")
        for line in plan if "Scan" in line})
    timing = next(line for line in plan if line.startswith("Execution Time"))
    print(f"{label:<14} EXPLAIN ANALYZE first page {term!r}: {timing}; {'; '.join(nodes)}", flush=True)


def measure(engine, scope: Scope, terms: dict[str, str], label: str) -> None:
    for kind, term in terms.items():
        filters = TicketFilters(search=term)
        matches = count_tickets(engine, scope, filters)
        count_ms = timed(lambda: count_tickets(engine, scope, filters))
        page_ms = timed(lambda: ticket_page(engine, scope, filters, page=1, page_size=50))
        print(f"{label:<14} {kind:<7} search {term!r:<22} {matches:>7,} rows  count {count_ms:8.1f} ms  "
              f"first page {page_ms:8.1f} ms", flush=True)
    explain(engine, scope, terms["medium"], label)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k tickets")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    tickets = 100_000 if args.quick else 1_000_000
    with throwaway_database(args.pg_url) as engine:
        with engine.connect() as conn:
            have_trgm = conn.execute(text("SELECT count(*) FROM pg_indexes WHERE indexname = :n"),
                                     {"n": TRGM_INDEXES[0]}).scalar_one() == 1
        if not have_trgm:
            print("the pg_trgm index is not in the schema (extension unavailable?): nothing to compare")
            return 0
        started = time.perf_counter()
        result = seed(engine, tickets=tickets, wards=40, municipalities=4, random_seed=3)
        print(f"seeded {tickets:,} tickets in {time.perf_counter() - started:.1f} s", flush=True)
        municipality = result.municipalities[0]
        scope = Scope(municipality_id=municipality["id"], role="manager")
        with engine.connect() as conn:
            number = conn.execute(text("SELECT tracking_number FROM tickets WHERE tenant_id = :t LIMIT 1"),
                                  {"t": municipality["id"]}).scalar_one()
        terms = {"rare": number[-9:], "medium": "transformer", "common": "water"}
        with engine.begin() as conn:
            conn.execute(text("ANALYZE tickets"))
            definitions = [conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": n})
                           .scalar_one() for n in TRGM_INDEXES]
            for name in TRGM_INDEXES:
                conn.execute(text(f"DROP INDEX {name}"))
        measure(engine, scope, terms, "no trgm index")
        started = time.perf_counter()
        with engine.begin() as conn:
            for definition in definitions:
                conn.execute(text(definition))
            conn.execute(text("ANALYZE tickets"))
        print(f"built the trigram indexes in {time.perf_counter() - started:.1f} s", flush=True)
        measure(engine, scope, terms, "pg_trgm GIN")
        with engine.connect() as conn:
            size = conn.execute(text("SELECT pg_size_pretty(sum(pg_relation_size(indexname::regclass))) "
                                     "FROM pg_indexes WHERE indexname = ANY(:n)"), {"n": list(TRGM_INDEXES)})
            print(f"trigram index size: {size.scalar_one()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
