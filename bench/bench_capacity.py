"""Dashboard loads per second one PostgreSQL answers, at 1M and 10M tickets (issue 19: when a read replica is needed).

A "load" is what a manager's dashboard asks when nothing is cached: the
whole-municipality figures (counts, bars, trend), the median first response
and the table's first page with its total, through the data API (no result
cache: every load runs its SQL). C client threads, each with its own
connection pool slot, load for T seconds; printed per database: loads/s,
the median and 95th percentile of one load, and PostgreSQL's CPU over the
run (from ``pg_stat_activity`` backends: the machine's CPU share it used).

Runs against the kept databases of ``bench_dashboard.py --tickets 1000000
10000000 --wards 110`` (seed them with it first); ``--quick`` uses
``opsdash_bench_quick`` (20,000 tickets) only.

    python bench/bench_capacity.py [--quick] [--clients C [C ...]] [--seconds T] [--databases NAME ...]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from sqlalchemy import select  # noqa: E402

from data.aggregates import median_first_response_s, ticket_figures  # noqa: E402
from data.db import make_engine  # noqa: E402
from data.models import User  # noqa: E402
from data.scope import scope_for_user  # noqa: E402
from data.tickets import ticket_page  # noqa: E402

DEFAULT_PG_URL = os.environ.get("OPSDASH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DATABASES = ("opsdash_bench_1000000_110w", "opsdash_bench_10000000_110w")
DIMS = ("category", "status", "ward_id")


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every PostgreSQL process of this machine."""
    total = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] and process.info["name"].startswith("postgres") and process.info["cpu_times"]:
            total += process.info["cpu_times"].user + process.info["cpu_times"].system
    return total


def measure(url: str, clients: int, seconds: float) -> dict[str, float]:
    engine = make_engine(url, pool_size=clients, max_overflow=0)
    with engine.connect() as conn:
        manager = conn.execute(select(User.username).where(User.role == "manager")).scalars().first()
    scope = scope_for_user(engine, manager)

    def load() -> None:
        ticket_figures(engine, scope, None, DIMS)
        median_first_response_s(engine, scope, None)
        ticket_page(engine, scope, page=1, page_size=25)

    load()  # warm: plans, caches
    times: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            load()
            with lock:
                times.append(time.perf_counter() - started)

    cpu_before, wall_before = postgres_cpu_s(), time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall_before
    cpu = postgres_cpu_s() - cpu_before
    engine.dispose()
    ordered = sorted(times)
    return {"loads/s": len(times) / wall, "median ms": statistics.median(ordered) * 1000,
            "p95 ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000, "postgres cores": cpu / wall,
            "loads": len(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the 20,000-ticket database, 2 clients, 5 s")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--databases", nargs="+", default=None)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    names = args.databases or (("opsdash_bench_quick",) if args.quick else DATABASES)
    clients = [2] if args.quick else args.clients
    seconds = 5 if args.quick else args.seconds
    base = args.pg_url.rsplit("/", 1)[0]
    print(f"dashboard loads (figures + median + table page 1, no cache), {seconds:.0f} s per point; "
          f"{os.cpu_count()} cores, PostgreSQL on the same machine")
    for name in names:
        for c in clients:
            try:
                r = measure(f"{base}/{name}", c, seconds)
            except Exception as exc:  # a database not seeded yet: say which command makes it
                print(f"  {name}: {type(exc).__name__}: {exc}".splitlines()[0][:200])
                print("  seed it with: python bench/bench_dashboard.py "
                      + ("--quick" if args.quick else "--tickets 1000000 10000000 --wards 110"))
                break
            print(f"  {name}, {c} clients: {r['loads/s']:.1f} loads/s ({r['loads']} loads); one load median "
                  f"{r['median ms']:.0f} ms, p95 {r['p95 ms']:.0f} ms; PostgreSQL {r['postgres cores']:.2f} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
