"""Helpers for the row-level security tests: a database owned by an app role, connect as a granted role,
grant through the real CLI."""
from __future__ import annotations

import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from data.db import make_engine, migrate
from data.scope import scope_for_user
from data.seed import SeedResult
from data.tickets import scoped_tickets

from .servers import run_opsdash
from .services import PG_ADMIN_URL, require_postgres

#: Categories whose tickets no role may read: gbv however spelled, and one nobody made known.
HIDDEN_CATEGORIES = ("GBV ", "\uff27\uff22\uff36", "gbv\u200b", "fire")


@dataclass(frozen=True)
class AppDatabase:
    url: str  # as the app role
    admin_url: str  # as the superuser
    name: str
    app_role: str
    prefix: str  # every role made in a test starts with it


@dataclass(frozen=True)
class RlsWorld:
    database: AppDatabase
    engine: Engine  # the app role's
    seeded: SeedResult
    hidden_ids: frozenset[str]

    def username(self, role: str, municipality: int = 0, ward_index: int = 0) -> str:
        muni = self.seeded.municipalities[municipality]["id"]
        users = [u["username"] for u in self.seeded.users if u["role"] == role and u["municipality_id"] == muni]
        return users[ward_index]

    def new_role_name(self, label: str) -> str:
        return f"{self.database.prefix}{label}_{uuid.uuid4().hex[:6]}"


def connect_as(world: RlsWorld, role: str) -> psycopg.Connection:
    """A psycopg connection to the world's database as ``role`` (trust auth on 127.0.0.1), autocommit."""
    url = make_url(world.database.url)
    return psycopg.connect(host=url.host, port=url.port or 5432, user=role, dbname=url.database,
                           autocommit=True, connect_timeout=10)


def grant(world: RlsWorld, username: str, role: str | None = None, password: str = "",
          *extra: str, cwd: Path) -> subprocess.CompletedProcess:
    """``opsdash db grant USERNAME [--role ROLE]`` as a real process, the password on stdin."""
    return run_opsdash("db", "grant", username, *(["--role", role] if role else []), *extra,
                       database_url=world.database.url, cwd=cwd, stdin=password)


def revoke(world: RlsWorld, username: str, *extra: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_opsdash("db", "revoke", username, *extra, database_url=world.database.url, cwd=cwd)


def scoped_ids(world: RlsWorld, username: str) -> set[str]:
    """What the application shows ``username``: the oracle a database role must match."""
    frame = scoped_tickets(world.engine, scope_for_user(world.engine, username), columns=("id",), sort=None)
    return set(frame["id"])


def role_ids(conn: psycopg.Connection, sql: str = "SELECT id FROM tickets") -> set[str]:
    return {str(row[0]) for row in conn.execute(sql)}


def role_exists(world: RlsWorld, role: str) -> bool:
    with world.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar_one() == 1


@contextmanager
def app_role_database() -> Iterator[AppDatabase]:
    """A new database owned by a LOGIN role with CREATEROLE and nothing else, migrated by it.

    As in production: the app role owns ``tickets`` (so row security does not apply to
    it) without being a superuser (superusers bypass every policy, which would prove
    nothing). PostgreSQL roles are cluster-wide, shared with every other test run:
    every role this database's tests make starts with ``prefix`` or is mapped in
    ``opsdash_db_roles``, and all are dropped on exit.
    """
    require_postgres()
    prefix = f"opsdash_t{uuid.uuid4().hex[:8]}_"
    app_role, name = f"{prefix}app", f"opsdash_rls_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=None)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{app_role}" LOGIN CREATEROLE'))
        conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{app_role}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    database = AppDatabase(url=base.replace("postgres@", f"{app_role}@") + f"/{name}",
                           admin_url=f"{base}/{name}", name=name, app_role=app_role, prefix=prefix)
    try:
        engine = make_engine(database.url)
        migrate(engine)
        engine.dispose()
        yield database
    finally:
        from data.db import _engines

        for key in [k for k in _engines if k == database.url]:
            _engines.pop(key).dispose()
        in_db = make_engine(database.admin_url, isolation_level="AUTOCOMMIT", poolclass=None)
        with in_db.connect() as conn:
            # quote_ident: the tests make role names with quotes and semicolons on purpose.
            mapped = "SELECT role_name FROM opsdash_db_roles" if conn.execute(
                text("SELECT to_regclass('opsdash_db_roles') IS NOT NULL")).scalar_one() else "SELECT NULL::name"
            roles = conn.execute(text(
                "SELECT quote_ident(rolname) FROM pg_roles WHERE starts_with(rolname, :prefix) AND rolname <> :app "
                f"OR rolname IN ({mapped})"), {"prefix": prefix, "app": app_role}).scalars().all()
            for role in roles:
                conn.execute(text(f"DROP OWNED BY {role}"))
        in_db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for role in [*roles, f'"{app_role}"']:
                conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()
