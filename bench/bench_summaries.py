"""What the summary tables (migration 0009) cost writers, on PostgreSQL (issue 20).

In throwaway databases:

- seeding N tickets without summaries (schema 0008), then migration 0009 on
  them (the build of the summaries from existing tickets);
- seeding N tickets with the summaries (into an empty table: COPY with the
  insert trigger off, then one build);
- a COPY of N/10 more tickets into the full table, with the summaries'
  triggers on and off (their cost on a ticketing system's bulk load);
- single-row statements, each its own transaction as the ticketing system
  writes them (INSERT, UPDATE of the status, UPDATE that resolves), triggers
  on and off: median milliseconds per statement, and per commit;
- writers at once: 4 connections updating tickets of one ward and category
  (the same summary rows), statements per second, triggers on and off.

    python bench/bench_summaries.py [--quick] [--tickets N] [--statements N] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

# Demo users get the cheapest argon2 profile here: the figures are about tickets.
os.environ.setdefault("OPSDASH_FAST_PASSWORD_HASH", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text  # noqa: E402

from bench.bench_seed import throwaway_database  # noqa: E402
from data.db import migrate  # noqa: E402
from data.seed import TICKET_COLUMNS, insert_tickets, seed  # noqa: E402

DEFAULT_PG_URL = os.environ.get("OPSDASH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TRIGGERS = ("opsdash_summarise_insert", "opsdash_summarise_update", "opsdash_summarise_delete")
WARDS = 110


def set_triggers(engine: Engine, on: bool) -> None:
    with engine.begin() as conn:
        for trigger in TRIGGERS:
            conn.execute(text(f"ALTER TABLE tickets {'ENABLE' if on else 'DISABLE'} TRIGGER {trigger}"))


def more_rows(tenant: uuid.UUID, ward: str, count: int):
    now = datetime.now(timezone.utc)
    for i in range(count):
        created = now - timedelta(minutes=i % 5000)
        values = {"id": uuid.uuid4(), "tenant_id": tenant, "ward_id": ward, "tracking_number": f"X-{uuid.uuid4().hex}",
                  "category": "water", "status": "open", "severity": "medium", "description": "Burst pipe",
                  "address": "1 Main Road", "language": "en", "is_sensitive": False, "created_at": created,
                  "sla_response_deadline": created + timedelta(hours=24),
                  "sla_resolution_deadline": created + timedelta(hours=168)}
        yield tuple(values.get(c) for c in TICKET_COLUMNS)


def single_statements(engine: Engine, tenant: uuid.UUID, ward: str, ids: list, n: int) -> dict[str, float]:
    """Median ms per statement of n INSERTs, n status UPDATEs and n resolving UPDATEs, one transaction each
    (the statement alone; "commit": the median commit after them)."""
    rng = random.Random(1)
    out: dict[str, float] = {}
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            statements = {
                "insert": lambda: cur.execute(
                    f"INSERT INTO tickets ({', '.join(TICKET_COLUMNS)}) VALUES ({', '.join(['%s'] * len(TICKET_COLUMNS))})",
                    next(more_rows(tenant, ward, 1))),
                "update status": lambda: cur.execute("UPDATE tickets SET status = %s WHERE id = %s",
                                                     (rng.choice(("open", "in_progress", "escalated")), rng.choice(ids))),
                "update resolved": lambda: cur.execute(
                    "UPDATE tickets SET status = 'resolved', resolved_at = now() WHERE id = %s", (rng.choice(ids),)),
            }
            for name, run in statements.items():
                times, commits = [], []
                for _ in range(n):
                    started = time.perf_counter()
                    run()  # the statement, its triggers included
                    between = time.perf_counter()
                    raw.commit()  # the WAL flush: the same with or without them, and noisy (~4 ms here)
                    times.append((between - started) * 1000)
                    commits.append((time.perf_counter() - between) * 1000)
                out[name] = statistics.median(times)
                out["commit"] = statistics.median(commits)
    finally:
        raw.close()
    return out


def writers_at_once(engine: Engine, ids: list, seconds: float = 10.0, threads: int = 4) -> float:
    """Status updates per second from ``threads`` connections on tickets of one cell."""
    done, stop = [0] * threads, time.monotonic() + seconds

    def work(k: int) -> None:
        rng = random.Random(k)
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur:
                while time.monotonic() < stop:
                    cur.execute("UPDATE tickets SET status = %s WHERE id = %s",
                                (rng.choice(("open", "in_progress", "escalated")), rng.choice(ids)))
                    raw.commit()
                    done[k] += 1
        finally:
            raw.close()

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 tickets, 50 statements of each kind")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--statements", type=int, default=500, help="single-row statements of each kind")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    n = 20_000 if args.quick else args.tickets
    if args.quick:
        args.statements = 50
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}", flush=True)
    with throwaway_database(args.pg_url, revision="0008") as engine:
        started = time.perf_counter()
        seed(engine, tickets=n, wards=WARDS, municipalities=1, random_seed=20)
        print(f"seed {n:,} without summaries (schema 0008): {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        migrate(engine)
        print(f"migration 0009 on {n:,} tickets (the summaries' build): {time.perf_counter() - started:.1f} s",
              flush=True)
    with throwaway_database(args.pg_url) as engine:
        started = time.perf_counter()
        result = seed(engine, tickets=n, wards=WARDS, municipalities=1, random_seed=20)
        print(f"seed {n:,} with summaries (empty table: COPY, then one build): {time.perf_counter() - started:.1f} s",
              flush=True)
        tenant, ward = uuid.UUID(result.municipalities[0]["id"]), result.municipalities[0]["wards"][0]
        for on in (True, False, True):
            set_triggers(engine, on)
            started = time.perf_counter()
            insert_tickets(engine, more_rows(tenant, ward, n // 10))
            print(f"COPY {n // 10:,} more into {n:,} tickets, summary triggers {'on ' if on else 'off'}: "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
        with engine.connect() as conn:
            ids = list(conn.execute(text("SELECT id FROM tickets WHERE ward_id = :w AND category = 'water' LIMIT 2000"),
                                    {"w": ward}).scalars())
        for on in (True, False, True):
            set_triggers(engine, on)
            figures = single_statements(engine, tenant, ward, ids, args.statements)
            rate = writers_at_once(engine, ids)
            print(f"triggers {'on ' if on else 'off'}: median ms per single-row statement "
                  + ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
                  + f"; 4 writers on one cell: {rate:,.0f} updates/s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
