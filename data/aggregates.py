"""SQL-side aggregates of the visible tickets: breakdowns, KPIs, the daily trend.

Everything here is computed by the database from ``scope_conditions`` and
``filter_conditions`` of ``data.tickets`` (the one gate), so the figures can
never disagree with the table or the exports.

At 1,000,000 tickets each pass over the table costs 0.2-0.5 s of database
CPU, so the dashboard asks for as few passes as it can: ``ticket_figures``
yields every count measure (KPI counts, both bar charts, the table's total)
and the daily trend in one scan (on PostgreSQL, for a filtered set; one
grouped scan each elsewhere, and for a whole municipality, where two scans
side by side finish sooner), and the median needs its own ordered aggregate
(for a whole municipality, read from an index in order instead).
"""
from __future__ import annotations

import re
from concurrent.futures import wait
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Sequence

import pandas as pd
from sqlalchemy import (
    ColumnElement, DateTime, Engine, Select, and_, bindparam, case, func, literal_column, or_, select, tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY

from . import summaries
from .db import BULK_SORT_MEMORY, HASH_GROUPING_SQL, SORT_MEMORY_SQL
from .errors import InvalidFilter
from .filters import TicketFilters, applied_filters
from .models import OPEN_STATUSES, Status, Ticket
from .scope import Scope
from .tickets import (
    DIMENSIONS,
    Dimension,
    filter_conditions,
    local_day_start,
    scope_conditions,
    ticket_column,
    whole_number,
)
from .workers import TREND

#: The count measures of every breakdown row, in this order.
MEASURES: tuple[str, ...] = (
    "tickets", "open", "resolved", "created_today", "response_breaches", "resolution_breaches",
)


def _dimensions(dims: Sequence[str]) -> tuple[str, ...]:
    for dim in dims:
        if dim not in DIMENSIONS:
            raise InvalidFilter(f"cannot group by {str(dim)[:40]!r}")
    if len(set(dims)) != len(dims):
        raise InvalidFilter("each dimension may be grouped by once")
    return tuple(dims)


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _breach(deadline, done, now: datetime) -> ColumnElement[bool]:
    """Past ``deadline`` without ``done``, or ``done`` after it."""
    return and_(deadline.is_not(None), or_(and_(done.is_(None), deadline < now), done > deadline))


def _measure_conditions(scope: Scope, now: datetime) -> list[ColumnElement[bool]]:
    """What a ticket must be to count in each of ``MEASURES[1:]`` (the first counts every ticket)."""
    today_start = local_day_start(now.astimezone(scope.tzinfo).date(), scope)
    return [
        Ticket.status.in_(OPEN_STATUSES),
        Ticket.status.in_((Status.RESOLVED.value, Status.CLOSED.value)),
        Ticket.created_at >= today_start,
        _breach(Ticket.sla_response_deadline, Ticket.first_responded_at, now),
        _breach(Ticket.sla_resolution_deadline, Ticket.resolved_at, now),
    ]


def _breakdown_frame(rows: Sequence[Sequence], dims: tuple[str, ...]) -> pd.DataFrame:
    """Rows of (*dims, *MEASURES) as the frame ``ticket_breakdown`` returns."""
    frame = pd.DataFrame.from_records(list(rows), columns=[*dims, *MEASURES])
    for i, dim in enumerate(dims):  # plain objects with None for missing (pandas would make a string column with NaN)
        frame[dim] = pd.Series([r[i] for r in rows], dtype=object, index=frame.index)
    frame[list(MEASURES)] = frame[list(MEASURES)].astype("int64")
    return frame


def ticket_breakdown(
    engine: Engine, scope: Scope, filters: TicketFilters | None = None, dims: Sequence[Dimension] = (),
    *, now: datetime | None = None,
) -> pd.DataFrame:
    """Every count measure (``MEASURES``) per combination of ``dims``, in one scan.

    With no ``dims`` the frame has exactly one row (zeros when nothing
    matches). Missing dimension values stay None. Breaches are judged
    against ``now``; "created today" is the local day of ``now`` in the
    scope's time zone.
    """
    dims = _dimensions(dims)
    with engine.connect() as conn:
        rows = conn.execute(_breakdown_statement(scope, filters, dims, now or datetime.now(timezone.utc))).all()
    return _breakdown_frame(rows, dims)


def _breakdown_statement(scope: Scope, filters: TicketFilters | None, dims: tuple[str, ...], now: datetime) -> Select:
    columns = [ticket_column(d) for d in dims]
    measures = [func.count(), *map(_count_if, _measure_conditions(scope, now))]
    stmt = select(*(c.label(d) for c, d in zip(columns, dims)), *measures).where(*scope_conditions(scope), *filter_conditions(scope, filters))
    return stmt.group_by(*columns) if columns else stmt


def counts_by(
    engine: Engine, scope: Scope, dimension: Dimension, filters: TicketFilters | None = None
) -> pd.Series:
    """Ticket counts grouped by ``dimension``, largest first; a missing value is "(none)"."""
    frame = ticket_breakdown(engine, scope, filters, (dimension,))
    keys = frame[dimension].astype(object).where(frame[dimension].notna(), "(none)")
    series = pd.Series(frame["tickets"].to_numpy(), index=pd.Index(keys, name=dimension), name="tickets")
    order = sorted(range(len(series)), key=lambda i: (-series.iloc[i], str(series.index[i])))
    return series.iloc[order]


def pair_counts(breakdown: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Long-format counts (``first``, ``second``, ``tickets``) folded out of a finer breakdown."""
    return (breakdown.groupby([first, second], dropna=False, sort=True)["tickets"].sum()
            .reset_index().astype({"tickets": "int64"}))


def counts_by_pair(
    engine: Engine, scope: Scope, first: Dimension, second: Dimension, filters: TicketFilters | None = None
) -> pd.DataFrame:
    """Counts grouped by two dimensions, long format (``first``, ``second``, ``tickets``)."""
    return pair_counts(ticket_breakdown(engine, scope, filters, (first, second)), first, second)


def _whole_municipality(scope: Scope, filters: TicketFilters | None) -> bool:
    """Every visible ticket of the municipality: no ward scope, no filter (a sign-in's, a wall screen's view)."""
    return not scope.is_councillor and not filter_conditions(scope, filters)


def _one_ward(scope: Scope, filters: TicketFilters | None) -> bool:
    """One ward's tickets, filtered at most by status and category (what 0012's index holds)."""
    applied = applied_filters(scope, filters)
    wards = (scope.ward_id,) if scope.is_councillor else applied.wards
    return (len(wards) == 1 and not applied.search and applied.created_from is None
            and applied.created_to is None)


def response_seconds(engine: Engine) -> ColumnElement[float]:
    """Seconds from creation to first response (NULL when not responded).

    On PostgreSQL exactly the key of ``ix_tickets_first_response`` (migration
    0004; 'epoch' a literal, so the planner can match the expression).
    """
    if engine.dialect.name == "postgresql":
        return func.date_part(literal_column("'epoch'"), Ticket.first_responded_at - Ticket.created_at)
    return (func.julianday(Ticket.first_responded_at) - func.julianday(Ticket.created_at)) * 86400.0


def median_first_response_s(engine: Engine, scope: Scope, filters: TicketFilters | None = None) -> float | None:
    """Median seconds from creation to first response over the responded tickets (None: none).

    Exact everywhere. A whole municipality, unfiltered or by status or
    category, on PostgreSQL: from the response-time histogram the database
    keeps (``data.summaries.median_response_s``: the middle's bucket, then
    one bucket of ``ix_tickets_first_response`` in order), however long the
    history. On SQLite, a whole municipality with no filter: count, then the
    middle one or two in index order. Otherwise (a ward, a date or search
    filter) the database sorts the matching tickets' times for
    percentile_cont. One ward (a councillor's, or a ward filter) with no date or
    search filter: count, then the middle one or two, both in the order of
    ``ix_tickets_ward_first_response`` (migration 0012), index-only.
    """
    seconds = response_seconds(engine)
    if summaries.median_answers(engine, scope, filters):
        return summaries.median_response_s(engine, scope, filters, seconds)
    responded = [*scope_conditions(scope), *filter_conditions(scope, filters), Ticket.first_responded_at.is_not(None)]
    if engine.dialect.name == "postgresql" and not (_whole_municipality(scope, filters) or _one_ward(scope, filters)):
        with engine.connect() as conn:
            # Sorts every response time: in memory rather than on disk (this transaction only).
            conn.exec_driver_sql(SORT_MEMORY_SQL, (BULK_SORT_MEMORY,))
            median = conn.execute(
                select(func.percentile_cont(0.5).within_group(seconds.asc())).where(*responded)
            ).scalar_one()
        return None if median is None else float(median)
    # The count and the middle from one snapshot: a ticket answered in between must not shift the middle.
    snapshot = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
    with engine.connect().execution_options(**snapshot) as conn:
        n = conn.execute(select(func.count()).select_from(Ticket).where(*responded)).scalar_one()
        if not n:
            return None
        ordered = select(seconds).where(*responded).order_by(seconds)
        middle = conn.execute(ordered.limit(2 - n % 2).offset((n - 1) // 2)).scalars().all()
    return float(sum(middle) / len(middle))


@dataclass(frozen=True)
class Kpis:
    total: int
    open: int
    created_today: int
    response_breaches: int
    resolution_breaches: int
    resolved: int
    median_first_response_s: float | None

    @property
    def resolution_rate(self) -> float | None:
        """Share of tickets in the filtered set that are resolved or closed."""
        return None if self.total == 0 else self.resolved / self.total

    @classmethod
    def from_breakdown(cls, breakdown: pd.DataFrame, median_first_response_s: float | None) -> Kpis:
        """The headline figures of a ``ticket_breakdown`` (any dims: its rows are summed)."""
        sums = {m: int(breakdown[m].sum()) for m in MEASURES}
        return cls(
            total=sums["tickets"], open=sums["open"], created_today=sums["created_today"],
            response_breaches=sums["response_breaches"], resolution_breaches=sums["resolution_breaches"],
            resolved=sums["resolved"], median_first_response_s=median_first_response_s,
        )


def ticket_kpis(
    engine: Engine, scope: Scope, filters: TicketFilters | None = None, *, now: datetime | None = None
) -> Kpis:
    """Headline figures for the filtered, scoped set, computed in SQL."""
    return Kpis.from_breakdown(ticket_breakdown(engine, scope, filters, now=now),
                               median_first_response_s(engine, scope, filters))


def _day_index(engine: Engine, column, bounds: list[datetime]) -> ColumnElement[int]:
    """0 before ``bounds[0]``; i when ``bounds[i-1] <= column < bounds[i]``; len(bounds) after; NULL for NULL."""
    if engine.dialect.name == "postgresql":  # a binary search per row
        return func.width_bucket(column, bindparam("day_bounds", bounds, type_=ARRAY(DateTime(timezone=True))))
    return case(*((column < bound, i) for i, bound in enumerate(bounds)), (column.is_not(None), len(bounds)))


@dataclass(frozen=True)
class _Days:
    """The local days of a trend: ``first``..``last`` and their midnights (``days`` + 1 bounds)."""
    first: date
    last: date
    bounds: list[datetime]

    @classmethod
    def ending(cls, now: datetime, days: int, scope: Scope) -> _Days:
        # The local midnights, worked out here with the scope's time zone (so
        # daylight saving and offsets like +5:45 need nothing from the database).
        days = whole_number(days, "days", 1, 3660)
        last = now.astimezone(scope.tzinfo).date()
        first = last - timedelta(days=days - 1)
        return cls(first, last, [local_day_start(first + timedelta(days=i), scope) for i in range(days + 1)])

    def indexes(self, engine: Engine) -> tuple[ColumnElement[int], ColumnElement[int]]:
        """Each ticket's day of creation and of resolution (0: before the first day)."""
        return (_day_index(engine, Ticket.created_at, self.bounds).label("created_day"),
                _day_index(engine, Ticket.resolved_at, self.bounds).label("resolved_day"))

    def frame(self, pairs: Sequence[tuple[int, int | None, int]]) -> pd.DataFrame:
        """The trend from ticket counts per (day created, day resolved) pair."""
        days = len(self.bounds) - 1
        created, resolved = [0] * (days + 2), [0] * (days + 2)  # plain lists: ~1,000 pandas .loc updates took 20 ms
        for c, r, n in pairs:
            created[c] += n
            if r is not None:
                resolved[r] += n
        # Open when the period starts: created before it, and not resolved before it.
        backlog_start = sum(n for c, r, n in pairs if c == 0 and (r is None or r > 0))
        # Index 0: before the period; days + 1: after today.
        return self.counts_frame(created[1:days + 1], resolved[1:days + 1], backlog_start)

    def dates(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range(len(self.bounds) - 1)]

    def counts_frame(self, created: Sequence[int], resolved: Sequence[int], backlog_start: int) -> pd.DataFrame:
        """The trend from the counts of each day of the period and the backlog when it starts."""
        frame = pd.DataFrame(
            {"created": list(created), "resolved": list(resolved)}, dtype="int64",
            index=pd.Index(pd.date_range(self.first, self.last, freq="D").date, name="day"))
        frame["backlog"] = backlog_start + (frame["created"] - frame["resolved"]).cumsum()
        return frame


def created_and_resolved_by_day(
    engine: Engine, scope: Scope, filters: TicketFilters | None = None, *, days: int = 30,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Per local day over the last ``days``: tickets created, resolved and the open backlog.

    One grouped scan: every ticket gets the index of the local day it was
    created and the one it was resolved (0: before the period), counted per
    pair of indexes (at most (days + 2) ** 2 groups).
    """
    period = _Days.ending(now or datetime.now(timezone.utc), days, scope)
    with engine.connect() as conn:
        return period.frame(_day_pairs(conn.execute(_trend_statement(engine, scope, filters, period))))


def _day_pairs(rows) -> list[tuple[int, int | None, int]]:
    """(day created, day resolved, tickets) rows of ``_trend_statement`` as ``_Days.frame`` takes them."""
    return [(c, r, int(n)) for c, r, n in rows]


def _trend_statement(engine: Engine, scope: Scope, filters: TicketFilters | None, period: _Days) -> Select:
    created, resolved = period.indexes(engine)
    # A ticket created and resolved before the period counts nowhere: left out before grouping
    # (in a municipality's years of history, nearly all of them).
    start = period.bounds[0]
    counts = or_(Ticket.created_at >= start, Ticket.resolved_at.is_(None), Ticket.resolved_at >= start)
    return (select(created, resolved, func.count())
            .where(*scope_conditions(scope), *filter_conditions(scope, filters), counts)
            .group_by(created, resolved))


@dataclass(frozen=True)
class Figures:
    """What the dashboard's counts, bar charts and trend show (``ticket_figures``)."""
    breakdown: pd.DataFrame  #: as ``ticket_breakdown``
    by_day: pd.DataFrame  #: as ``created_and_resolved_by_day``


#: The dimensions of a summary cell, in the order ``summaries.SummaryCounts.cells`` holds them.
_CELL_DIMS = ("category", "status", "ward_id")


def summary_figures(
    engine: Engine, scope: Scope, filters: TicketFilters | None = None, dims: Sequence[Dimension] = (),
    *, days: int = 30, now: datetime | None = None,
) -> Figures | None:
    """``ticket_figures`` from the summary tables PostgreSQL keeps (``data.summaries``); None where they
    cannot answer (SQLite, a date or search filter, a dimension they do not hold, another time zone)."""
    dims = _dimensions(dims)
    if not set(dims) <= set(_CELL_DIMS) or not summaries.answers(engine, scope, filters):
        return None
    now = now or datetime.now(timezone.utc)
    period = _Days.ending(now, days, scope)
    counts = summaries.read_counts(engine, scope, filters, now, period.first)
    if counts is None:
        return None
    trend = period.counts_frame([counts.created.get(d, 0) for d in period.dates()],
                                [counts.resolved.get(d, 0) for d in period.dates()], counts.backlog_start)
    if dims == _CELL_DIMS:  # the dashboard's breakdown: the cells as they are
        return Figures(_breakdown_frame(counts.cells, dims), trend)
    position = {d: i for i, d in enumerate(_CELL_DIMS)}
    sums: dict[tuple, list[int]] = {} if dims else {(): [0] * len(MEASURES)}  # no dims: one row, zeros when none
    for cell in counts.cells:
        total = sums.setdefault(tuple(cell[position[d]] for d in dims), [0] * len(MEASURES))
        for i, value in enumerate(cell[3:]):
            total[i] += value
    return Figures(_breakdown_frame([(*key, *values) for key, values in sums.items()], dims), trend)


def ticket_figures(
    engine: Engine, scope: Scope, filters: TicketFilters | None = None, dims: Sequence[Dimension] = (),
    *, days: int = 30, now: datetime | None = None, side_by_side: bool = True,
) -> Figures:
    """``ticket_breakdown`` and ``created_and_resolved_by_day`` of the same tickets and ``now``.

    On PostgreSQL, unless a date or search filter applies, from the summary tables
    (``summary_figures``): their cost does not grow with the tickets' history.
    Otherwise the tickets are scanned. On PostgreSQL, for a filtered set or a
    ward, in one scan: a GROUPING
    SETS query groups each visible ticket once by ``dims`` and once by its
    (day created, day resolved) pair. The filters (a free-text search above
    all) and the scan are then the bulk of the cost, and the median's sort
    keeps the other core busy: at 539,175 of 969,845 tickets ('street') one
    scan next to the median took 0.78 s, two scans next to it 0.94 s. For a
    whole municipality, two queries side by side (``_figures_in_two_scans``),
    unless ``side_by_side`` is False: then the one scan, which leaves a core
    to whatever else the machine must do meanwhile (a sign-in's page load:
    measured, sign-ins were ~0.3 s slower with the two queries). The result
    is the same either way. Elsewhere (SQLite has no grouping sets) the two
    queries one after the other.
    """
    dims = _dimensions(dims)
    now = now or datetime.now(timezone.utc)
    summarised = summary_figures(engine, scope, filters, dims, days=days, now=now)
    if summarised is not None:
        return summarised
    if engine.dialect.name != "postgresql":
        return Figures(ticket_breakdown(engine, scope, filters, dims, now=now),
                       created_and_resolved_by_day(engine, scope, filters, days=days, now=now))
    period = _Days.ending(now, days, scope)
    if side_by_side and _whole_municipality(scope, filters):
        return _figures_in_two_scans(engine, scope, dims, period, now)
    # Per ticket: its dimensions, days and a 0/1 flag per measure, in a subquery that
    # OFFSET 0 keeps whole. Grouped directly, PostgreSQL would count one group per ticket
    # for a width_bucket of a timestamp, find no room to hash that many and sort every
    # row instead (0.3 s more at 539,175 tickets); over a subquery's column it assumes
    # a few hundred groups, and hashes both sets in one pass.
    flags = [case((condition, 1), else_=0).label(f"m{i}")
             for i, condition in enumerate(_measure_conditions(scope, now))]
    tickets = (select(*(ticket_column(d).label(d) for d in dims), *period.indexes(engine), *flags)
               .where(*scope_conditions(scope), *filter_conditions(scope, filters))
               .offset(0).subquery())
    columns = [tickets.c[d] for d in dims]
    created, resolved = tickets.c.created_day, tickets.c.resolved_day
    # GROUPING(created) is 1 in the rows of the dims set, 0 in those of the days set (a NULL
    # dimension or resolution day could not tell them apart). A ticket created and resolved
    # before the period lands in the days set's (0, 0) group, which the trend ignores.
    stmt = (select(func.grouping(created), *columns, created, resolved, func.count(),
                   *(func.coalesce(func.sum(tickets.c[flag.name]), 0) for flag in flags))
            .group_by(func.grouping_sets(tuple_(*columns), tuple_(created, resolved))))
    with engine.connect() as conn:
        conn.exec_driver_sql(HASH_GROUPING_SQL, (BULK_SORT_MEMORY,))
        rows = conn.execute(stmt).all()
    width = len(dims)
    breakdown = [(*r[1:1 + width], *r[3 + width:]) for r in rows if r[0] == 1]
    pairs = [(r[1 + width], r[2 + width], int(r[3 + width])) for r in rows if r[0] == 0]
    return Figures(_breakdown_frame(breakdown, dims), period.frame(pairs))


#: A snapshot id as pg_export_snapshot() returns it (it is written into SQL: SET TRANSACTION SNAPSHOT takes no parameter).
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


def _figures_in_two_scans(engine: Engine, scope: Scope, dims: tuple[str, ...], period: _Days,
                          now: datetime) -> Figures:
    """A whole municipality's figures as two queries at once, over one snapshot.

    With no filter the grouping-sets scan costs more than its two halves
    together (at 969,845 tickets: 0.89 s, against 0.36 s for the counts and
    0.38 s for the trend, whose period condition drops half the rows before
    grouping), and the median then reads an index in 0.2 s instead of
    keeping the second core busy (``median_first_response_s``). Side by
    side, interleaved over 8 rounds: 727 ms against 983 ms for the one scan.
    The second connection imports the first one's snapshot, so both count
    exactly the same tickets. It runs in the TREND lane (``data.workers``);
    with no thread free there, the trend runs after the counts on the first
    connection, in the same snapshot: the same figures, a little later.
    """
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise RuntimeError(f"unexpected snapshot id {snapshot!r}")
        trend = TREND.try_submit(_trend_in_snapshot, engine, snapshot, scope, period)
        try:
            conn.exec_driver_sql(HASH_GROUPING_SQL, (BULK_SORT_MEMORY,))
            rows = conn.execute(_breakdown_statement(scope, None, dims, now)).all()
        finally:
            if trend is not None:
                wait([trend])  # even when the counts failed: the trend's snapshot ends with this transaction
        if trend is None:  # no thread free: after the counts, in the same snapshot
            pairs = _day_pairs(conn.execute(_trend_statement(engine, scope, None, period)))
        else:
            pairs = trend.result()
    return Figures(_breakdown_frame(rows, dims), period.frame(pairs))


def _trend_in_snapshot(engine: Engine, snapshot: str, scope: Scope, period: _Days) -> list[tuple[int, int | None, int]]:
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        conn.exec_driver_sql(HASH_GROUPING_SQL, (BULK_SORT_MEMORY,))
        return _day_pairs(conn.execute(_trend_statement(engine, scope, None, period)))
