"""Issue 20's ratio, paired: the same reads on the kept 1M and 10M databases, alternating, median of N rounds.

``bench_dashboard.py --tickets 1000000 10000000 --wards 110`` seeds the two
databases (once) and measures each size in turn; here the sizes alternate
statement by statement, so a machine's drift falls on both alike. Prints per
read the medians and the 10M / 1M ratio (target for the whole-municipality
figures: <= 1.5x).

    python bench/bench_history.py [--rounds 9] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.store import BREAKDOWN_DIMS  # noqa: E402
from data.aggregates import median_first_response_s, ticket_figures  # noqa: E402
from data.db import make_engine  # noqa: E402
from data.scope import scope_for_user  # noqa: E402
from data.tickets import ticket_page  # noqa: E402

DEFAULT_PG_URL = os.environ.get("OPSDASH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: bench_dashboard.py's kept databases and benchmark accounts.
DATABASES = {"1M": "opsdash_bench_1000000_110w", "10M": "opsdash_bench_10000000_110w"}
MANAGER, COUNCILLOR = "bench.manager.argon2", "bench.councillor.argon2"
READS = {
    "manager: figures (whole municipality)": lambda e, m, c: ticket_figures(e, m, None, BREAKDOWN_DIMS),
    "manager: median first response": lambda e, m, c: median_first_response_s(e, m),
    "manager: table page 1 with its count": lambda e, m, c: ticket_page(e, m, page=1, page_size=25),
    "councillor: figures (one ward)": lambda e, m, c: ticket_figures(e, c, None, BREAKDOWN_DIMS),
    "councillor: median first response": lambda e, m, c: median_first_response_s(e, c),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    base = args.pg_url.rsplit("/", 1)[0]
    engines = {size: make_engine(f"{base}/{name}") for size, name in DATABASES.items()}
    try:
        users = {size: (scope_for_user(e, MANAGER), scope_for_user(e, COUNCILLOR)) for size, e in engines.items()}
    except Exception as error:  # noqa: BLE001 - a missing database or account: say what to run
        print(f"bench_history: needs bench_dashboard.py --tickets 1000000 10000000 --wards 110 first ({error})")
        return 0
    times: dict[tuple[str, str], list[float]] = {(read, size): [] for read in READS for size in engines}
    for read, call in READS.items():  # warm: plans cached, pages in memory
        for size, engine in engines.items():
            call(engine, *users[size])
    for _ in range(3 if args.quick else args.rounds):
        for read, call in READS.items():
            for size, engine in engines.items():
                started = time.perf_counter()
                call(engine, *users[size])
                times[(read, size)].append((time.perf_counter() - started) * 1000)
    print(f"paired, {3 if args.quick else args.rounds} rounds, medians (target: whole-municipality figures 10M <= 1.5x 1M)")
    for read in READS:
        small, large = (statistics.median(times[(read, size)]) for size in ("1M", "10M"))
        print(f"  {read:40} 1M {small:7.1f} ms   10M {large:7.1f} ms   {large / small:5.2f}x")
    for engine in engines.values():
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
