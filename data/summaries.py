"""Figures from the summary tables (migration 0009) instead of every ticket: cost bounded by cells, not history.

What each figure reads (PostgreSQL; ``data.summary_tables`` lists the tables):

- counts per category x status x ward, open, resolved, the total:
  ``ticket_summary_cells`` (a few thousand rows per municipality);
- created today, and the trend's created / resolved per local day and the
  backlog: ``ticket_summary_days`` from the period's first day on, with the
  cells' totals for what lies before it;
- SLA breaches at a clock ``now``: a breach is a ticket done after its
  deadline (counted in the cells) or one still pending whose deadline is
  before ``now``. Pending ones = all pending (cells) minus those due at or
  after ``now``: deadlines from the next UTC day on (day buckets), from the
  next hour to that day (hour buckets), and the rest of the current hour
  from the tickets themselves (a partial index holds only pending
  deadlines). Exact at any clock;
- the median first response: the histogram ``ticket_summary_responses``
  finds the 300-second bucket of the middle ticket and its rank in it, then
  the response-time index (migration 0004) reads that one bucket in order.
  Exact.

Everything one call reads comes from one snapshot (REPEATABLE READ), the
tickets of the current hour included, so the figures are those of one moment.
The summaries answer the whole-municipality and ward views with status,
category and ward filters; dates and free-text search scan
(``data.tickets.summarisable``). Day figures need the Scope's time zone to be
the one the tenant's days were counted in; otherwise the caller scans.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import ColumnElement, Connection, Engine, func, or_, select

from . import summary_tables
from .filters import TicketFilters, applied_filters
from .models import OPEN_STATUSES, Status, Ticket
from .scope import Scope
from .summary_tables import RESOLUTION_SLA, RESPONSE_BUCKET_S, RESPONSE_SLA, cells, days, deadlines, responses, zones
from .tickets import filter_conditions, scope_conditions, summarisable, summary_conditions

#: The breakdown dimensions a summary cell knows.
SUMMARY_DIMENSIONS = frozenset({"category", "status", "ward_id"})
_DONE = (Status.RESOLVED.value, Status.CLOSED.value)
_CELL = (cells.c.category_key, cells.c.status, cells.c.ward_id)


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
    utc = now.astimezone(timezone.utc)
    next_hour = utc.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    next_day = datetime.combine(utc.date() + timedelta(days=1), time.min, tzinfo=timezone.utc)
    today = now.astimezone(scope.tzinfo).date()
    with _snapshot(engine) as conn:
        zone = conn.execute(select(zones.c.timezone).where(zones.c.tenant_id == scope.municipality_id)).scalar()
        if zone is not None and zone != scope.timezone:
            return None  # local days counted in another zone (none recorded: no ticket yet, all zeros)
        totals = conn.execute(select(*_CELL, *(cells.c[n] for n in (
            "tickets", "resolved", "response_late", "response_pending", "resolution_late", "resolution_pending")))
            .where(*summary_conditions(cells, scope, filters), cells.c.tickets > 0)).all()
        created_today = {(c, s, w): int(n) for c, s, w, n in conn.execute(
            select(*_cell_of(days), func.sum(days.c.created))
            .where(*summary_conditions(days, scope, filters), days.c.day >= today).group_by(*_cell_of(days)))}
        ahead = _pending_ahead(conn, scope, filters, now, next_hour, next_day)
        trend = conn.execute(
            select(days.c.day, func.sum(days.c.created), func.sum(days.c.resolved), func.sum(days.c.closed))
            .where(*summary_conditions(days, scope, filters), days.c.day >= first_day).group_by(days.c.day)).all()
    rows = []
    for category, status, ward, tickets, resolved, response_late, response_pending, resolution_late, \
            resolution_pending in totals:
        key = (category, status, ward)
        rows.append((*key, tickets, tickets if status in OPEN_STATUSES else 0, tickets if status in _DONE else 0,
                     created_today.get(key, 0),
                     response_late + response_pending - ahead.get((*key, RESPONSE_SLA), 0),
                     resolution_late + resolution_pending - ahead.get((*key, RESOLUTION_SLA), 0)))
    # Open when the period starts = created before it, minus those whose later of created and
    # resolved lies before it; each "before" is everything minus the days from the period on.
    backlog_start = (sum(r[3] for r in rows) - sum(t[4] for t in totals)
                     - sum(int(created) - int(closed) for _, created, _, closed in trend))
    return SummaryCounts(
        cells=rows,
        created={day: int(n) for day, n, _, _ in trend if n},
        resolved={day: int(n) for day, _, n, _ in trend if n},
        backlog_start=int(backlog_start),
    )


def _cell_of(table) -> tuple[ColumnElement, ...]:
    return table.c.category_key, table.c.status, table.c.ward_id


def _pending_ahead(conn: Connection, scope: Scope, filters: TicketFilters | None, now: datetime,
                   next_hour: datetime, next_day: datetime) -> dict[tuple, int]:
    """Pending tickets per (cell, SLA) whose deadline is at or after ``now``: not (yet) breached."""
    ahead: dict[tuple, int] = {}
    bucketed = conn.execute(
        select(*_cell_of(deadlines), deadlines.c.kind, func.sum(deadlines.c.pending))
        .where(*summary_conditions(deadlines, scope, filters),
               or_(deadlines.c.hourly.is_(True) & (deadlines.c.bucket >= next_hour) & (deadlines.c.bucket < next_day),
                   deadlines.c.hourly.is_(False) & (deadlines.c.bucket >= next_day)))
        .group_by(*_cell_of(deadlines), deadlines.c.kind))
    for category, status, ward, kind, n in bucketed:
        ahead[(category, status, ward, kind)] = int(n)
    # The rest of the current hour, from the tickets: their deadlines decide to the microsecond.
    response = (Ticket.first_responded_at.is_(None) & (Ticket.sla_response_deadline >= now)
                & (Ticket.sla_response_deadline < next_hour))
    resolution = (Ticket.resolved_at.is_(None) & (Ticket.sla_resolution_deadline >= now)
                  & (Ticket.sla_resolution_deadline < next_hour))
    current = conn.execute(
        select(Ticket.category_key, Ticket.status, Ticket.ward_id,
               func.count().filter(response), func.count().filter(resolution))
        .where(*scope_conditions(scope), *filter_conditions(scope, filters), or_(response, resolution))
        .group_by(Ticket.category_key, Ticket.status, Ticket.ward_id))
    for category, status, ward, responses_due, resolutions_due in current:
        for kind, n in ((RESPONSE_SLA, responses_due), (RESOLUTION_SLA, resolutions_due)):
            if n:
                ahead[(category, status, ward, kind)] = ahead.get((category, status, ward, kind), 0) + int(n)
    return ahead


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


__all__ = ["SUMMARY_DIMENSIONS", "SummaryCounts", "answers", "median_answers", "median_response_s", "read_counts"]
