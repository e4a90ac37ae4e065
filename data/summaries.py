"""Figures from the summary tables (migrations 0009, 0013) instead of every ticket: cost bounded by cells, not history.

What each figure reads (PostgreSQL; ``data.summary_tables`` lists the tables):

- counts per category x status x ward, open, resolved, the total:
  ``ticket_summary_cells`` (a few thousand rows per municipality);
- created today, and the trend's created / resolved per local day and the
  backlog: ``ticket_summary_days`` from the period's first day on, with the
  cells' totals for what lies before it;
- SLA breaches at a clock ``now``: a breach is a ticket done after its
  deadline (counted in the cells) or one still pending whose deadline is
  before ``now``. Pending ones = all pending (cells) minus those due at or
  after ``now``. Those come from the tenant's mark (migration 0013): the
  pending deadlines at or after it (``ticket_summary_ahead``, per cell),
  minus the hour buckets from the mark to the clock's hour (none once the
  marks have moved to it: ``advance_marks``, every minute in a server),
  minus this hour's deadlines before ``now`` from the tickets themselves (a
  partial index holds only pending deadlines): a read bounded by the cells,
  however many deadline buckets lie ahead. A clock before the mark (a past
  one) counts as before 0013: deadlines from the next UTC day on (day
  buckets), from the next hour to that day (hour buckets), and the rest of
  the current hour from the tickets. Exact at any clock, moved marks or not;
- the median first response: the histogram ``ticket_summary_responses``
  finds the 300-second bucket of the middle ticket and its rank in it, then
  the response-time index (migration 0004) reads that one bucket in order.
  Exact.

Everything one call reads comes from one snapshot (REPEATABLE READ), the
tickets of the current hour and the mark included, so the figures are those
of one moment (a mark and its ahead rows move in one transaction).
The summaries answer the whole-municipality and ward views with status,
category and ward filters; dates and free-text search scan
(``data.tickets.summarisable``). Day figures need the Scope's time zone to be
the one the tenant's days were counted in; otherwise the caller scans.
"""
from __future__ import annotations

import logging
import uuid
import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import ColumnElement, Connection, Engine, and_, case, func, literal_column, or_, select, text, union_all
from sqlalchemy.exc import DBAPIError

from . import summary_tables
from .filters import TicketFilters, applied_filters
from .models import OPEN_STATUSES, Status, Ticket
from .scope import Scope
from .summary_tables import (
    RESOLUTION_SLA,
    RESPONSE_BUCKET_S,
    RESPONSE_SLA,
    ahead,
    cells,
    days,
    deadlines,
    marks,
    responses,
    zones,
)
from .tickets import filter_conditions, scope_conditions, summarisable, summary_conditions

_DONE = (Status.RESOLVED.value, Status.CLOSED.value)
log = logging.getLogger("opsdash.summaries")
#: The advisory lock that lets one process at a time advance the marks (others skip: no queue).
ADVANCE_LOCK = zlib.crc32(b"opsdash_summary_advance")
#: How long an advance waits for a table lock (a bulk load's build, a TRUNCATE) before giving up for now.
ADVANCE_LOCK_TIMEOUT = "2s"
#: How long the second try waits for the writers of a tenant the first skipped (writes wait as long).
ADVANCE_WAIT = "200ms"


@dataclass(frozen=True)
class SummaryCounts:
    """Every count ``ticket_figures`` shows, per cell, and the trend's day counts."""

    #: (category, status, ward_id, tickets, open, resolved, created_today, response_breaches,
    #: resolution_breaches): data.aggregates.MEASURES after the cell; only cells with tickets.
    cells: list[tuple]
    created: dict[date, int]  #: tickets created per local day, from the period's first day on
    resolved: dict[date, int]  #: tickets resolved per local day, likewise
    backlog_start: int  #: tickets open when the period's first day began


def answers(engine: Engine, scope: Scope, filters: TicketFilters | None) -> bool:
    """Whether the summaries can give the figures of ``filters`` under ``scope`` (not yet the time zone)."""
    return summarisable(scope, filters) and summary_tables.available(engine)


def _snapshot(engine: Engine) -> Connection:
    return engine.connect().execution_options(isolation_level="REPEATABLE READ")


def read_counts(engine: Engine, scope: Scope, filters: TicketFilters | None, now: datetime,
                first_day: date) -> SummaryCounts | None:
    """The counts at clock ``now``, with day counts from ``first_day`` (local) on; None: scan instead."""
    if not answers(engine, scope, filters):
        return None
    hour = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    tenant = zones.c.tenant_id == scope.municipality_id
    with _snapshot(engine) as conn:
        if summary_tables.ahead_available(engine):  # and the mark at or before the clock's hour
            usable = (select(marks.c.as_of <= hour).where(marks.c.tenant_id == scope.municipality_id)
                      .scalar_subquery())
            found = conn.execute(select(zones.c.timezone, usable).where(tenant)).first()
        else:
            found = conn.execute(select(zones.c.timezone, literal_column("NULL")).where(tenant)).first()
        zone, from_mark = found if found is not None else (None, None)
        if zone is not None and zone != scope.timezone:
            return None  # local days counted in another zone (none recorded: no ticket yet, all zeros)
        rows = conn.execute(_cells_statement(scope, filters, now, from_mark=bool(from_mark))).all()
        trend = conn.execute(
            select(days.c.day, func.sum(days.c.created), func.sum(days.c.resolved), func.sum(days.c.closed))
            .where(*summary_conditions(days, scope, filters), days.c.day >= first_day).group_by(days.c.day)).all()
    # Open when the period starts = created before it, minus those whose later of created and
    # resolved lies before it; each "before" is everything minus the days from the period on.
    backlog_start = (sum(int(r[3]) for r in rows) - sum(int(r[-1]) for r in rows)
                     - sum(int(created) - int(closed) for _, created, _, closed in trend))
    return SummaryCounts(
        cells=[(c, s, w, *map(int, measures)) for c, s, w, *measures, _ in rows],
        created={day: int(n) for day, n, _, _ in trend if n},
        resolved={day: int(n) for day, _, n, _ in trend if n},
        backlog_start=backlog_start,
    )


def _key(category: ColumnElement, status: ColumnElement, ward: ColumnElement) -> list[ColumnElement]:
    """A cell's key as the summaries' unique indexes hold it (a NULL ward is a value of its own)."""
    return [category.label("category_key"), status.label("status"), func.coalesce(ward, literal_column("''")).label("ward_key"),
            ward.is_(None).label("no_ward")]


def _cells_statement(scope: Scope, filters: TicketFilters | None, now: datetime, *, from_mark: bool = False):
    """Per cell with tickets: category, status, ward, MEASURES, and the tickets resolved (for the backlog).

    One statement, joined in the database: a cell's created-today and not-yet-breached
    counts come from the day and deadline rows and the current hour's tickets.
    ``from_mark``: the tenant's mark (``ticket_summary_marks``) is at or before the
    clock's hour, so the deadlines ahead are counted from it.
    """
    utc = now.astimezone(timezone.utc)
    hour = utc.replace(minute=0, second=0, microsecond=0)
    next_hour = hour + timedelta(hours=1)
    next_day = datetime.combine(utc.date() + timedelta(days=1), time.min, tzinfo=timezone.utc)
    today = now.astimezone(scope.tzinfo).date()
    created_today = (select(*_key(*_cell_of(days)), func.sum(days.c.created).label("n"))
                     .where(*summary_conditions(days, scope, filters), days.c.day >= today)
                     .group_by(*_key(*_cell_of(days))).cte("created_today"))
    # Pending tickets whose deadline is at or after ``now`` (not breached), per cell: parts added up.
    d = deadlines.c

    def bucket_part(table, amount, *conditions, sign=1):
        kind = table.c.kind
        return (select(*_key(*_cell_of(table)),
                       case((kind == RESPONSE_SLA, amount if sign > 0 else -amount), else_=0).label("response"),
                       case((kind == RESOLUTION_SLA, amount if sign > 0 else -amount), else_=0).label("resolution"))
                .where(*summary_conditions(table, scope, filters), *conditions))

    def tickets_part(start, end, sign):
        response = (Ticket.first_responded_at.is_(None) & (Ticket.sla_response_deadline >= start)
                    & (Ticket.sla_response_deadline < end))
        resolution = (Ticket.resolved_at.is_(None) & (Ticket.sla_resolution_deadline >= start)
                      & (Ticket.sla_resolution_deadline < end))
        ticket_key = _key(Ticket.category_key, Ticket.status, Ticket.ward_id)
        def counted(condition):
            return func.count().filter(condition) if sign > 0 else -func.count().filter(condition)

        return (select(*ticket_key, counted(response).label("response"), counted(resolution).label("resolution"))
                .where(*scope_conditions(scope), *filter_conditions(scope, filters), or_(response, resolution))
                .group_by(*ticket_key))

    if from_mark:
        # Ahead of the mark (kept by the triggers), less the hour buckets from the mark to this
        # hour (none once the marks have moved to it), less this hour's deadlines before ``now``.
        mark = select(marks.c.as_of).where(marks.c.tenant_id == scope.municipality_id).scalar_subquery()
        parts = [bucket_part(ahead, ahead.c.pending),
                 bucket_part(deadlines, d.pending, d.hourly.is_(True), d.bucket >= mark, d.bucket < hour, sign=-1),
                 tickets_part(hour, now, -1)]
    else:
        # The mark is ahead of the clock (a clock in the past) or absent: from the next UTC day
        # on by day buckets, to it by hour buckets, and the rest of this hour from the tickets.
        parts = [bucket_part(deadlines, d.pending, d.hourly.is_(False), d.bucket >= next_day),
                 bucket_part(deadlines, d.pending, d.hourly.is_(True), d.bucket >= next_hour, d.bucket < next_day),
                 tickets_part(now, next_hour, 1)]
    every = union_all(*parts).subquery("parts")
    part_key = [every.c.category_key, every.c.status, every.c.ward_key, every.c.no_ward]
    ahead_now = (select(*part_key, func.sum(every.c.response).label("response"),
                        func.sum(every.c.resolution).label("resolution"))
                 .group_by(*part_key).cte("ahead"))
    c = cells.c
    cell_key = _key(*_cell_of(cells))

    def joined(other):
        return and_(*(other.c[k.name] == k for k in cell_key))

    def zero(column):
        return func.coalesce(column, 0)

    return (select(c.category_key, c.status, c.ward_id, c.tickets,
                   case((c.status.in_(OPEN_STATUSES), c.tickets), else_=0),
                   case((c.status.in_(_DONE), c.tickets), else_=0),
                   zero(created_today.c.n),
                   c.response_late + c.response_pending - zero(ahead_now.c.response),
                   c.resolution_late + c.resolution_pending - zero(ahead_now.c.resolution),
                   c.resolved)
            .select_from(cells.outerjoin(created_today, joined(created_today))
                         .outerjoin(ahead_now, joined(ahead_now)))
            .where(*summary_conditions(cells, scope, filters), c.tickets > 0))


def _cell_of(table) -> tuple[ColumnElement, ...]:
    return table.c.category_key, table.c.status, table.c.ward_id


def median_answers(engine: Engine, scope: Scope, filters: TicketFilters | None) -> bool:
    """Whether the histogram gives this median: a whole municipality, any status or category filter."""
    return (answers(engine, scope, filters) and scope.sees_whole_municipality
            and not applied_filters(scope, filters).wards)


def median_response_s(engine: Engine, scope: Scope, filters: TicketFilters | None,
                      seconds: ColumnElement[float]) -> float | None:
    """The exact median of ``seconds`` (``data.aggregates.response_seconds``) over responded tickets.

    The histogram gives how many responded tickets lie in each bucket; the middle
    one's bucket and rank in it follow, and the response-time index is read from
    that bucket's start, in order, for the one or two middle values.
    """
    with _snapshot(engine) as conn:
        histogram = conn.execute(
            select(responses.c.bucket, func.sum(responses.c.responded))
            .where(*summary_conditions(responses, scope, filters))
            .group_by(responses.c.bucket).order_by(responses.c.bucket)).all()
        n = sum(int(count) for _, count in histogram)
        if not n:
            return None
        lower, before = (n - 1) // 2, 0
        for bucket, count in histogram:
            if before + count > lower:
                break
            before += int(count)
        # The trigger's bucket: floor(seconds / width). "seconds >= start - 1" lets the index range
        # start there; the floor condition then keeps exactly this bucket's tickets and later ones.
        start = bucket * RESPONSE_BUCKET_S
        ordered = (select(seconds)
                   .where(*scope_conditions(scope), *filter_conditions(scope, filters),
                          Ticket.first_responded_at.is_not(None), seconds >= start - 1,
                          func.floor(seconds / RESPONSE_BUCKET_S) >= bucket)
                   .order_by(seconds).offset(lower - before).limit(2 - n % 2))
        middle = conn.execute(ordered).scalars().all()
    return float(sum(middle) / len(middle))


def advance_marks(engine: Engine, now: datetime | None = None, *, tenant: uuid.UUID | None = None) -> int:
    """Move every tenant's mark (or ``tenant``'s) to the hour of ``now`` (default: the database's clock),
    in short transactions of their own; returns how many moved.

    Figures are exact whether or not this runs: it only keeps what a figure
    reads small (the hour buckets between a mark and the clock). Only one
    process advances at a time (an advisory lock; the others return 0 at
    once). A tenant being written to is skipped, never waited for; if one
    was, a second try waits for the writers in progress at most
    ``ADVANCE_WAIT`` (new writers wait behind it as long, then for the
    advance: milliseconds), else it moves at the next call. The server calls
    this every minute (``dashboard_app/server.py``). 0 where there are no
    marks (SQLite, a schema before 0013).
    """
    if not summary_tables.ahead_available(engine):
        return 0
    moved = _advance(engine, now, tenant, wait=False)
    if moved is None:
        return 0  # another process is at it
    if _behind(engine, now, tenant):
        moved += _advance(engine, now, tenant, wait=True) or 0
    return moved


def _advance(engine: Engine, now: datetime | None, tenant: uuid.UUID | None, *, wait: bool) -> int | None:
    try:
        with engine.connect().execution_options(isolation_level="READ COMMITTED") as conn, conn.begin():
            if not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ADVANCE_LOCK}).scalar_one():
                return None
            conn.execute(text(f"SET LOCAL lock_timeout = '{ADVANCE_WAIT if wait else ADVANCE_LOCK_TIMEOUT}'"))
            return int(conn.execute(
                text("SELECT opsdash_summary_advance(coalesce(CAST(:upto AS timestamptz), now()), "
                     "CAST(:tenant AS uuid), :wait)"), {"upto": now, "tenant": tenant, "wait": wait}).scalar_one())
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        log.info("the summaries' marks were busy (writers, a bulk load or a TRUNCATE): not advanced this time")
        return 0


def _behind(engine: Engine, now: datetime | None, tenant: uuid.UUID | None) -> bool:
    """Whether a mark (``tenant``'s) is still before the hour of ``now`` (a tenant skipped for its writers)."""
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT EXISTS (SELECT 1 FROM ticket_summary_marks WHERE as_of < date_trunc('hour', "
            "coalesce(CAST(:upto AS timestamptz), now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
            "AND (CAST(:tenant AS uuid) IS NULL OR tenant_id = CAST(:tenant AS uuid)))"),
            {"upto": now, "tenant": tenant}).scalar_one())


__all__ = ["SummaryCounts", "advance_marks", "answers", "median_answers", "median_response_s", "read_counts"]
