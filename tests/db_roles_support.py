"""Helpers for the row-level security tests: connect as a granted role, grant through the real CLI."""
from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from data.scope import scope_for_user
from data.seed import SeedResult
from data.tickets import scoped_tickets

from .support import run_opsdash

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
