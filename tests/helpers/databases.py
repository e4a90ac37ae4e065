"""Test databases and the worlds tests build in them: empty PostgreSQL databases, tickets inserted
around the gate, the seeded user of a role and that user's Scope."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, text

from data.db import make_engine
from data.scope import Scope, scope_for_user
from data.seed import TICKET_COLUMNS, SeedResult

from .services import PG_ADMIN_URL, require_postgres


@contextmanager
def empty_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (no schema); dropped on exit, with any pooled engine."""
    require_postgres()
    name = f"opsdash_t_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=None)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from data.db import _engines

        for key in [k for k in _engines if k == url]:
            _engines.pop(key).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def user_of(result: SeedResult, role: str, municipality: int = 0, ward_index: int = 0) -> dict:
    """The seeded user of ``role`` in the ``municipality``-th seeded municipality."""
    muni_id = result.municipalities[municipality]["id"]
    users = [u for u in result.users if u["role"] == role and u["municipality_id"] == muni_id]
    return users[ward_index] if role == "ward_councillor" else users[0]


def scope_of(engine: Engine, result: SeedResult, role: str, municipality: int = 0, ward_index: int = 0) -> Scope:
    return scope_for_user(engine, user_of(result, role, municipality, ward_index)["username"])


def ticket_record(tenant_id: uuid.UUID, **values) -> dict:
    """One tickets-table row for direct inserts (defaults: a visible open water ticket, now)."""
    from datetime import datetime, timezone

    row = {
        "id": uuid.uuid4(), "tenant_id": tenant_id, "ward_id": "W1",
        "tracking_number": f"T-{uuid.uuid4().hex[:16]}", "category": "water", "status": "open",
        "severity": "medium", "description": "", "address": None, "language": "en", "is_sensitive": False,
        "created_at": datetime.now(timezone.utc),
    }
    row.update(values)
    return row


def copy_row(record: dict) -> tuple:
    """A ``ticket_record`` as the row ``data.seed.insert_tickets`` loads (its TICKET_COLUMNS, in order)."""
    return tuple(record.get(column) for column in TICKET_COLUMNS)


def add_tickets(engine: Engine, rows: list[dict]) -> None:
    """Insert ``ticket_record`` rows around the gate (tests build their own worlds)."""
    from data.models import Ticket

    if rows:
        with engine.begin() as conn:
            conn.execute(Ticket.__table__.insert(), rows)
