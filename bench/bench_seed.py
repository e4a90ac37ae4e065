"""Seeding speed on PostgreSQL: ``seed(tickets=N)`` into a throwaway database.

Prints seconds and rows/s for 100k and 1M tickets (``--quick``: 100k only).
The database is created for the run and dropped afterwards.

    python bench/bench_seed.py [--quick] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Demo users get the cheapest argon2 profile here: the figure is about tickets.
os.environ.setdefault("OPSDASH_FAST_PASSWORD_HASH", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text  # noqa: E402

from data.db import make_engine, migrate  # noqa: E402
from data.seed import seed  # noqa: E402

DEFAULT_PG_URL = os.environ.get("OPSDASH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def throwaway_database(admin_url: str, revision: str = "head") -> Iterator[Engine]:
    """A fresh PostgreSQL database, migrated to ``revision``, dropped on exit."""
    name = f"opsdash_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(admin_url.rsplit("/", 1)[0] + f"/{name}")
    try:
        migrate(engine, revision)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def time_seed(admin_url: str, tickets: int) -> float:
    with throwaway_database(admin_url) as engine:
        started = time.perf_counter()
        result = seed(engine, tickets=tickets, wards=40, municipalities=4, random_seed=1)
        elapsed = time.perf_counter() - started
        assert result.tickets == tickets
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k tickets only")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    for n in sizes:
        seconds = time_seed(args.pg_url, n)
        print(f"seed {n:>9,} tickets (PostgreSQL COPY): {seconds:7.1f} s  {n / seconds:10,.0f} rows/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
