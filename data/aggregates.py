"""SQL-side aggregates of the visible tickets: breakdowns, KPIs, the daily trend.

Everything here is computed by the database from ``scope_conditions`` and
``filter_conditions`` of ``data.tickets`` (the one gate), so the figures can
never disagree with the table or the exports.

At 1,000,000 tickets each pass over the table costs 0.2-0.4 s of database
CPU, so the dashboard asks for as few passes as it can: ``ticket_breakdown``
yields every count measure (KPI counts, both bar charts, the table's total)
in one grouped scan, the median needs its own ordered aggregate, and the
daily trend one more grouped scan.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import pandas as pd
from sqlalchemy import ColumnElement, DateTime, Engine, and_, bindparam, case, func, or_, select
from sqlalchemy.dialects.postgresql import ARRAY

from .db import BULK_SORT_MEMORY, SORT_MEMORY_SQL
from .errors import InvalidFilter
from .filters import TicketFilters
from .models import OPEN_STATUSES, Status, Ticket
from .scope import Scope
from .tickets import DIMENSIONS, Dimension, filter_conditions, local_day_start, scope_conditions, whole_number

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
    now = now or datetime.now(timezone.utc)
    today_start = local_day_start(now.astimezone(scope.tzinfo).date(), scope)
    columns = [getattr(Ticket, d) for d in dims]
    stmt = select(
        *columns,
        func.count(),
        _count_if(Ticket.status.in_(OPEN_STATUSES)),
        _count_if(Ticket.status.in_((Status.RESOLVED.value, Status.CLOSED.value))),
        _count_if(Ticket.created_at >= today_start),
        _count_if(_breach(Ticket.sla_response_deadline, Ticket.first_responded_at, now)),
        _count_if(_breach(Ticket.sla_resolution_deadline, Ticket.resolved_at, now)),
    ).where(*scope_conditions(scope), *filter_conditions(scope, filters))
    if columns:
        stmt = stmt.group_by(*columns)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    frame = pd.DataFrame.from_records(rows, columns=[*dims, *MEASURES])
    for dim in dims:  # plain objects with None for missing (pandas would make a string column with NaN)
        frame[dim] = pd.Series([r[dims.index(dim)] for r in rows], dtype=object, index=frame.index)
    frame[list(MEASURES)] = frame[list(MEASURES)].astype("int64")
    return frame


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


def median_first_response_s(engine: Engine, scope: Scope, filters: TicketFilters | None = None) -> float | None:
    """Median seconds from creation to first response over the responded tickets (None: none)."""
    responded = [*scope_conditions(scope), *filter_conditions(scope, filters), Ticket.first_responded_at.is_not(None)]
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # Sorts every response time: in memory rather than on disk (this transaction only).
            conn.exec_driver_sql(SORT_MEMORY_SQL, (BULK_SORT_MEMORY,))
            seconds = func.date_part("epoch", Ticket.first_responded_at - Ticket.created_at)
            median = conn.execute(
                select(func.percentile_cont(0.5).within_group(seconds.asc())).where(*responded)
            ).scalar_one()
        else:
            seconds = (func.julianday(Ticket.first_responded_at) - func.julianday(Ticket.created_at)) * 86400.0
            n = conn.execute(select(func.count()).select_from(Ticket).where(*responded)).scalar_one()
            median = None
            if n:
                ordered = select(seconds).where(*responded).order_by(seconds)
                middle = conn.execute(ordered.limit(2 - n % 2).offset((n - 1) // 2)).scalars().all()
                median = sum(middle) / len(middle)
    return None if median is None else float(median)


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


def created_and_resolved_by_day(
    engine: Engine, scope: Scope, filters: TicketFilters | None = None, *, days: int = 30,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Per local day over the last ``days``: tickets created, resolved and the open backlog.

    One grouped scan: every ticket gets the index of the local day it was
    created and the one it was resolved (0: before the period), counted per
    pair of indexes (at most (days + 2) ** 2 groups). The day boundaries are
    the local midnights, worked out here with the scope's time zone (so
    daylight saving and offsets like +5:45 need nothing from the database).
    """
    days = whole_number(days, "days", 1, 3660)
    now = now or datetime.now(timezone.utc)
    local_today = now.astimezone(scope.tzinfo).date()
    first_day = local_today - timedelta(days=days - 1)
    bounds = [local_day_start(first_day + timedelta(days=i), scope) for i in range(days + 1)]
    created = _day_index(engine, Ticket.created_at, bounds).label("created")
    resolved = _day_index(engine, Ticket.resolved_at, bounds).label("resolved")
    # A ticket created and resolved before the period counts nowhere: left out before grouping
    # (in a municipality's years of history, nearly all of them).
    counts = or_(Ticket.created_at >= bounds[0], Ticket.resolved_at.is_(None), Ticket.resolved_at >= bounds[0])
    stmt = (select(created, resolved, func.count())
            .where(*scope_conditions(scope), *filter_conditions(scope, filters), counts)
            .group_by(created, resolved))
    with engine.connect() as conn:
        rows = [(c, r, int(n)) for c, r, n in conn.execute(stmt)]
    per_day = pd.DataFrame(0, index=range(days + 2), columns=["created", "resolved"], dtype="int64")
    for c, r, n in rows:
        per_day.loc[c, "created"] += n
        if r is not None:
            per_day.loc[r, "resolved"] += n
    # Open when the period starts: created before it, and not resolved before it.
    backlog_start = sum(n for c, r, n in rows if c == 0 and (r is None or r > 0))
    frame = per_day.iloc[1:days + 1].copy()  # 0: before the period; days + 1: after today
    frame.index = pd.Index(pd.date_range(first_day, local_today, freq="D").date, name="day")
    frame["backlog"] = backlog_start + (frame["created"] - frame["resolved"]).cumsum()
    return frame
