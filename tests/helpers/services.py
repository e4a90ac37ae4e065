"""The services the suite runs against (PostgreSQL, Redis, Chromium): where they are, whether they answer.

Service-backed tests skip with a clear reason when a service is absent on a
laptop, and fail instead when CI=true (a CI run must never pass by skipping).
"""
from __future__ import annotations

import os
import shutil
import socket

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("OPSDASH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("OPSDASH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def service_missing(reason: str) -> None:
    """Skip locally; fail under CI, where every service must be there."""
    if CI:
        pytest.fail(f"{reason} (CI=true: service tests must not skip)", pytrace=False)
    pytest.skip(f"{reason}: skipped outside CI; start it to run this test (see docs/architecture.md, 'Services in development and CI')")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    from sqlalchemy.engine import make_url

    url = make_url(PG_ADMIN_URL)
    if not _port_open(url.host or "127.0.0.1", url.port or 5432):
        return False
    try:
        import psycopg

        with psycopg.connect(host=url.host, port=url.port or 5432, user=url.username, dbname=url.database,
                             connect_timeout=3):
            return True
    except Exception:
        return False


def redis_available() -> bool:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def require_postgres() -> None:
    if not postgres_available():
        service_missing(f"PostgreSQL is not running at {PG_ADMIN_URL}")


def require_redis() -> None:
    if not redis_available():
        service_missing(f"Redis is not running at {REDIS_URL}")


#: Debian's chromium, headless, with nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
