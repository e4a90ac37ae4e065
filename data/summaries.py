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

from sqlalchemy import ColumnElement, Connection, Engine, and_, case, func, literal_column, or_, select

from . import summary_tables
from .filters import TicketFilters, applied_filters
from .models import OPEN_STATUSES, Status, Ticket
from .scope import Scope
from .summary_tables import RESOLUTION_SLA, RESPONSE_BUCKET_S, RESPONSE_SLA, cells, days, deadlines, responses, zones
from .tickets import filter_conditions, scope_conditions, summarisable, summary_conditions

_DONE = (Status.RESOLVED.value, Status.CLOSED.value)


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
    with _snapshot(engine) as conn:
        zone = conn.execute(select(zones.c.timezone).where(zones.c.tenant_id == scope.municipality_id)).scalar()
        if zone is not None and zone != scope.timezone:
            return None  # local days counted in another zone (none recorded: no ticket yet, all zeros)
        rows = conn.execute(_cells_statement(scope, filters, now)).all()
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


def _cells_statement(scope: Scope, filters: TicketFilters | None, now: datetime):
    """Per cell with tickets: category, status, ward, MEASURES, and the tickets resolved (for the backlog).

    One statement, joined in the database: a cell's created-today and not-yet-breached
    counts come from the day and deadline rows and the current hour's tickets.
    """
    utc = now.astimezone(timezone.utc)
    next_hour = utc.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    next_day = datetime.combine(utc.date() + timedelta(days=1), time.min, tzinfo=timezone.utc)
    today = now.astimezone(scope.tzinfo).date()
    created_today = (select(*_key(*_cell_of(days)), func.sum(days.c.created).label("n"))
                     .where(*summary_conditions(days, scope, filters), days.c.day >= today)
                     .group_by(*_key(*_cell_of(days))).cte("created_today"))
    # Pending tickets whose deadline is at or after ``now`` (not breached): from the next UTC
    # day on by day buckets, to it by hour buckets, and the rest of this hour from the tickets.
    d = deadlines.c
    ahead = (select(*_key(*_cell_of(deadlines)),
                    func.sum(d.pending).filter(d.kind == RESPONSE_SLA).label("response"),
                    func.sum(d.pending).filter(d.kind == RESOLUTION_SLA).label("resolution"))
             .where(*summary_conditions(deadlines, scope, filters),
                    or_(d.hourly.is_(True) & (d.bucket >= next_hour) & (d.bucket < next_day),
                        d.hourly.is_(False) & (d.bucket >= next_day)))
             .group_by(*_key(*_cell_of(deadlines))).cte("ahead"))
    response = (Ticket.first_responded_at.is_(None) & (Ticket.sla_response_deadline >= now)
                & (Ticket.sla_response_deadline < next_hour))
    resolution = (Ticket.resolved_at.is_(None) & (Ticket.sla_resolution_deadline >= now)
                  & (Ticket.sla_resolution_deadline < next_hour))
    ticket_key = _key(Ticket.category_key, Ticket.status, Ticket.ward_id)
    this_hour = (select(*ticket_key, func.count().filter(response).label("response"),
                        func.count().filter(resolution).label("resolution"))
                 .where(*scope_conditions(scope), *filter_conditions(scope, filters), or_(response, resolution))
                 .group_by(*ticket_key).cte("this_hour"))
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
                   c.response_late + c.response_pending - zero(ahead.c.response) - zero(this_hour.c.response),
                   c.resolution_late + c.resolution_pending - zero(ahead.c.resolution)
                   - zero(this_hour.c.resolution),
                   c.resolved)
            .select_from(cells.outerjoin(created_today, joined(created_today)).outerjoin(ahead, joined(ahead))
                         .outerjoin(this_hour, joined(this_hour)))
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


__all__ = ["SummaryCounts", "answers", "median_answers", "median_response_s", "read_counts"]
