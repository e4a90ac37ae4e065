"""The summary tables PostgreSQL keeps as tickets change (migrations 0009, 0013), as SQLAlchemy tables.

Read by ``data.summaries`` (figures, the median) and ``data.tickets.count_tickets``
(the table's total), always through ``data.tickets.summary_conditions``, the
gate over a summary table. Written only by the database's own triggers.
Kept apart from ``data.models``: nothing creates them but the migration.
"""
from __future__ import annotations

import threading
import weakref

from sqlalchemy import BigInteger, Boolean, Column, Date, DateTime, Engine, MetaData, SmallInteger, String, Table, Text, Uuid, text

#: Width of a first-response histogram bucket in seconds (migration 0009's RESPONSE_BUCKET_S).
RESPONSE_BUCKET_S = 300
#: ``ticket_summary_deadlines.kind``: which SLA a pending deadline belongs to.
RESPONSE_SLA, RESOLUTION_SLA = 1, 2

_metadata = MetaData()


def _cell(*columns: Column) -> tuple[Column, ...]:
    return (Column("tenant_id", Uuid), Column("ward_id", String(64)), Column("category_key", Text),
            Column("status", String(32)), *columns)


#: Per (tenant, ward, category key, status): tickets, resolved ones (``resolved_at`` set), and per SLA
#: the tickets done after their deadline (late) and those not done yet that have one (pending).
cells = Table("ticket_summary_cells", _metadata, *_cell(
    *(Column(name, BigInteger) for name in ("tickets", "resolved", "response_late", "response_pending",
                                            "resolution_late", "resolution_pending"))))
#: Per cell and local day of the tenant's zone: created, resolved, and closed (day of the later of the two).
days = Table("ticket_summary_days", _metadata, *_cell(
    Column("day", Date), Column("created", BigInteger), Column("resolved", BigInteger), Column("closed", BigInteger)))
#: Pending tickets per cell, SLA (``kind``) and deadline bucket (a UTC hour, or a UTC day).
deadlines = Table("ticket_summary_deadlines", _metadata, *_cell(
    Column("kind", SmallInteger), Column("hourly", Boolean), Column("bucket", DateTime(timezone=True)),
    Column("pending", BigInteger)))
#: Responded tickets per (tenant, category key, status) and first-response bucket (RESPONSE_BUCKET_S wide).
responses = Table("ticket_summary_responses", _metadata, Column("tenant_id", Uuid), Column("category_key", Text),
                  Column("status", String(32)), Column("bucket", BigInteger), Column("responded", BigInteger))
#: The time zone each tenant's local days are counted in.
zones = Table("ticket_summary_zones", _metadata, Column("tenant_id", Uuid, primary_key=True),
              Column("timezone", Text))
#: Per tenant, the mark ``as_of`` (an hour's start, or -infinity) that ``ahead`` counts from (migration 0013).
marks = Table("ticket_summary_marks", _metadata, Column("tenant_id", Uuid, primary_key=True),
              Column("as_of", DateTime(timezone=True)))
#: Pending tickets per cell and SLA (``kind``) whose deadline is at or after the tenant's mark.
ahead = Table("ticket_summary_ahead", _metadata, *_cell(Column("kind", SmallInteger), Column("pending", BigInteger)))

_known: weakref.WeakKeyDictionary[Engine, dict[str, bool]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _exists(engine: Engine, table: str) -> bool:
    if engine.dialect.name != "postgresql":
        return False
    with _lock:
        known = _known.get(engine, {}).get(table)
    if known is None:
        with engine.connect() as conn:
            known = bool(conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar_one())
        if known:  # an absent table is asked again: a migration may create it while this process runs
            with _lock:
                _known.setdefault(engine, {})[table] = known
    return known


def available(engine: Engine) -> bool:
    """Whether ``engine``'s database keeps the summaries (PostgreSQL at migration 0009 or later).

    Known once found: a database downgraded below 0009 while a process
    runs needs that process restarted (as any schema change does).
    """
    return _exists(engine, "ticket_summary_cells")


def ahead_available(engine: Engine) -> bool:
    """Whether it keeps the deadlines ahead of a mark as well (migration 0013 or later); asked once likewise."""
    return available(engine) and _exists(engine, "ticket_summary_marks")


__all__ = ["RESOLUTION_SLA", "RESPONSE_BUCKET_S", "RESPONSE_SLA", "ahead", "ahead_available", "available", "cells",
           "days", "deadlines", "marks", "responses", "zones"]
