"""Helpers shared by the benchmarks (not itself a benchmark: run_all.py runs bench_*.py only)."""
from __future__ import annotations

from sqlalchemy import Engine, text

from data.db import make_engine, migrate


def kept_database(admin_url: str, name: str) -> Engine:
    """An Engine on PostgreSQL database ``name``: created on first use (no schema then), kept for later runs."""
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_engine(admin_url.rsplit("/", 1)[0] + f"/{name}")


def migrated_database(admin_url: str, name: str) -> Engine:
    """An Engine on PostgreSQL database ``name``: created on first use, migrated, kept for later runs."""
    engine = kept_database(admin_url, name)
    migrate(engine)
    return engine
