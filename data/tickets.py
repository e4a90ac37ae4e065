"""Scoped ticket reads: rows, pages, chunks, frames and SQL-side aggregates.

Every public function here takes a Scope; ``scoped_select`` is the only
place a ticket SELECT is built, so the tenancy, ward and sensitivity rules
(design.md invariants 1-3) cannot be forgotten by a caller. The counts, the
table, the charts and the exports all come from the same statement, so they
can never disagree.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator, Literal, Sequence

import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    String,
    Select,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
)

from .errors import InvalidFilter
from .filters import TicketFilters
from .models import OPEN_STATUSES, SENSITIVE_CATEGORY, Status, Ticket
from .scope import Scope

#: The ticket columns a staff member may see, in display order.
TICKET_COLUMNS: tuple[str, ...] = (
    "id",
    "tracking_number",
    "category",
    "status",
    "severity",
    "description",
    "address",
    "ward_id",
    "language",
    "created_at",
    "sla_response_deadline",
    "sla_resolution_deadline",
    "first_responded_at",
    "resolved_at",
    "escalated_at",
    "assigned_to",
    "updated_at",
)
DATETIME_COLUMNS: tuple[str, ...] = (
    "created_at",
    "sla_response_deadline",
    "sla_resolution_deadline",
    "first_responded_at",
    "resolved_at",
    "escalated_at",
    "updated_at",
)
SORTABLE_COLUMNS = frozenset(TICKET_COLUMNS) - {"id", "description", "address"}
DIMENSIONS = ("status", "category", "severity", "ward_id", "language")
Dimension = Literal["status", "category", "severity", "ward_id", "language"]
SortSpec = Sequence[tuple[str, Literal["asc", "desc"]]]
DEFAULT_SORT: SortSpec = (("created_at", "desc"),)
MAX_PAGE_SIZE = 1000


def whole_number(value: object, name: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high], else InvalidFilter (a bool or "3" is not a number of rows)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidFilter(f"{name} must be a whole number from {low:,} to {high:,}")
    return value


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def not_sensitive() -> ColumnElement[bool]:
    """Rows that are not sensitive by flag nor by category (any case)."""
    return and_(
        func.coalesce(Ticket.is_sensitive, false()) == false(),
        func.lower(func.coalesce(Ticket.category, "")) != SENSITIVE_CATEGORY,
    )


def scope_conditions(scope: Scope) -> list[ColumnElement[bool]]:
    """The gate: tenant, ward (councillors) and sensitivity, as SQL."""
    if not isinstance(scope, Scope):  # a forged dict or None must not pass
        raise TypeError("a Scope is required for every ticket read")
    conditions: list[ColumnElement[bool]] = [Ticket.tenant_id == scope.municipality_id, not_sensitive()]
    if scope.is_councillor:
        conditions.append(Ticket.ward_id == scope.ward_id)
    return conditions


def local_day_start(day: date, scope: Scope) -> datetime:
    """Midnight of ``day`` in the scope's time zone, as an aware UTC datetime."""
    return datetime.combine(day, time.min, tzinfo=scope.tzinfo).astimezone(timezone.utc)


def filter_conditions(scope: Scope, filters: TicketFilters | None) -> list[ColumnElement[bool]]:
    if filters is None:
        return []
    if not isinstance(filters, TicketFilters):
        raise InvalidFilter("filters must be a TicketFilters")
    conditions: list[ColumnElement[bool]] = []
    if filters.statuses:
        conditions.append(Ticket.status.in_(filters.statuses))
    if filters.categories:
        conditions.append(func.lower(Ticket.category).in_(filters.categories))
    # A councillor's ward is fixed by the Scope: a ward filter could only
    # widen (it cannot, the scope condition is ANDed) or blank their view, so
    # it is ignored rather than trusted.
    if filters.wards and scope.sees_whole_municipality:
        conditions.append(Ticket.ward_id.in_(filters.wards))
    if filters.created_from:
        conditions.append(Ticket.created_at >= local_day_start(filters.created_from, scope))
    if filters.created_to:
        conditions.append(Ticket.created_at < local_day_start(filters.created_to + timedelta(days=1), scope))
    if filters.search:
        pattern = f"%{_escape_like(filters.search)}%"
        conditions.append(
            or_(
                Ticket.tracking_number.ilike(pattern, escape="\\"),
                Ticket.description.ilike(pattern, escape="\\"),
                Ticket.address.ilike(pattern, escape="\\"),
            )
        )
    return conditions


def scoped_select(
    scope: Scope,
    filters: TicketFilters | None = None,
    columns: Sequence[str] = TICKET_COLUMNS,
    sort: SortSpec | None = DEFAULT_SORT,
) -> Select:
    """The one SELECT of visible tickets: scope AND filters, in a stable order."""
    unknown = [c for c in columns if c not in TICKET_COLUMNS]
    if unknown:
        raise InvalidFilter(f"unknown column {unknown[0]!r}")
    stmt = select(*(getattr(Ticket, c) for c in columns)).where(
        *scope_conditions(scope), *filter_conditions(scope, filters)
    )
    if sort:
        stmt = stmt.order_by(*_order_by(sort))
    return stmt


def _order_by(sort: SortSpec) -> list:
    clauses = []
    for column, direction in sort:
        if column not in SORTABLE_COLUMNS:
            raise InvalidFilter(f"cannot sort by {str(column)[:40]!r}")
        if direction not in ("asc", "desc"):
            raise InvalidFilter(f"sort direction must be 'asc' or 'desc', got {str(direction)[:10]!r}")
        col = getattr(Ticket, column)
        clauses.append(col.desc().nulls_last() if direction == "desc" else col.asc().nulls_last())
    clauses.append(Ticket.id.asc())  # a total order, so pages never repeat or skip rows
    return clauses


def rows_to_frame(rows: Sequence[Sequence], columns: Sequence[str], scope: Scope) -> pd.DataFrame:
    """Rows as a DataFrame; datetimes in the scope's local time zone."""
    frame = pd.DataFrame.from_records(list(rows), columns=list(columns))
    for column in columns:
        if column in DATETIME_COLUMNS:
            frame[column] = pd.to_datetime(frame[column], utc=True).dt.tz_convert(scope.timezone)
        elif column == "id":
            frame[column] = frame[column].astype(str)
    return frame


def scoped_tickets(
    engine: Engine,
    scope: Scope,
    filters: TicketFilters | None = None,
    *,
    columns: Sequence[str] = TICKET_COLUMNS,
    sort: SortSpec | None = DEFAULT_SORT,
    limit: int | None = None,
    offset: int = 0,
) -> pd.DataFrame:
    """Visible tickets as a DataFrame (the analyst API).

    For large results use ``iter_ticket_chunks`` or ``ticket_page``.
    """
    stmt = scoped_select(scope, filters, columns, sort)
    if limit is not None:
        stmt = stmt.limit(whole_number(limit, "limit", 0, 10**9))
    if offset:
        stmt = stmt.offset(whole_number(offset, "offset", 0, 10**9))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return rows_to_frame(rows, columns, scope)


@dataclass(frozen=True)
class TicketPage:
    frame: pd.DataFrame
    total: int
    page: int
    page_size: int

    @property
    def page_count(self) -> int:
        return max(1, -(-self.total // self.page_size))


def ticket_page(
    engine: Engine,
    scope: Scope,
    filters: TicketFilters | None = None,
    *,
    page: int = 1,
    page_size: int = 50,
    sort: SortSpec | None = DEFAULT_SORT,
    columns: Sequence[str] = TICKET_COLUMNS,
) -> TicketPage:
    """One page (1-based) of visible tickets and the total count."""
    whole_number(page, "page", 1, 10**9)
    whole_number(page_size, "page size", 1, MAX_PAGE_SIZE)
    total = count_tickets(engine, scope, filters)
    frame = scoped_tickets(
        engine, scope, filters, columns=columns, sort=sort, limit=page_size, offset=(page - 1) * page_size
    )
    return TicketPage(frame=frame, total=total, page=page, page_size=page_size)


def iter_ticket_chunks(
    engine: Engine,
    scope: Scope,
    filters: TicketFilters | None = None,
    *,
    chunk_size: int = 10_000,
    columns: Sequence[str] = TICKET_COLUMNS,
    sort: SortSpec | None = DEFAULT_SORT,
) -> Iterator[pd.DataFrame]:
    """Visible tickets as DataFrames of at most ``chunk_size`` rows.

    A server-side cursor streams the rows, so memory does not grow with the
    result (``yield_per`` with an explicit size: ``partitions()`` without one
    buffers everything).
    """
    whole_number(chunk_size, "chunk size", 1, 10**6)
    stmt = scoped_select(scope, filters, columns, sort)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=chunk_size).execute(stmt)
        for part in result.partitions(chunk_size):
            yield rows_to_frame(part, columns, scope)


def count_tickets(engine: Engine, scope: Scope, filters: TicketFilters | None = None) -> int:
    stmt = select(func.count()).select_from(Ticket).where(
        *scope_conditions(scope), *filter_conditions(scope, filters)
    )
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def counts_by(
    engine: Engine, scope: Scope, dimension: Dimension, filters: TicketFilters | None = None
) -> pd.Series:
    """Ticket counts grouped by ``dimension``, largest first (computed in SQL)."""
    if dimension not in DIMENSIONS:
        raise InvalidFilter(f"cannot group by {str(dimension)[:40]!r}")
    column = getattr(Ticket, dimension)
    stmt = (
        select(column, func.count())
        .where(*scope_conditions(scope), *filter_conditions(scope, filters))
        .group_by(column)
        .order_by(func.count().desc(), column)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    series = pd.Series({(k if k is not None else "(none)"): int(v) for k, v in rows}, dtype="int64", name="tickets")
    series.index.name = dimension
    return series


def counts_by_pair(
    engine: Engine, scope: Scope, first: Dimension, second: Dimension, filters: TicketFilters | None = None
) -> pd.DataFrame:
    """Counts grouped by two dimensions, long format (``first``, ``second``, ``tickets``)."""
    for dim in (first, second):
        if dim not in DIMENSIONS:
            raise InvalidFilter(f"cannot group by {str(dim)[:40]!r}")
    a, b = getattr(Ticket, first), getattr(Ticket, second)
    stmt = (
        select(a, b, func.count())
        .where(*scope_conditions(scope), *filter_conditions(scope, filters))
        .group_by(a, b)
        .order_by(a, b)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return pd.DataFrame(rows, columns=[first, second, "tickets"])


def _seconds_between(engine: Engine, later, earlier) -> ColumnElement[float]:
    if engine.dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


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


def ticket_kpis(
    engine: Engine, scope: Scope, filters: TicketFilters | None = None, *, now: datetime | None = None
) -> Kpis:
    """Headline figures for the filtered, scoped set, computed in SQL."""
    now = now or datetime.now(timezone.utc)
    today_start = local_day_start(now.astimezone(scope.tzinfo).date(), scope)
    where = [*scope_conditions(scope), *filter_conditions(scope, filters)]

    def count_if(condition) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    response_breach = and_(
        Ticket.sla_response_deadline.is_not(None),
        or_(
            and_(Ticket.first_responded_at.is_(None), Ticket.sla_response_deadline < now),
            Ticket.first_responded_at > Ticket.sla_response_deadline,
        ),
    )
    resolution_breach = and_(
        Ticket.sla_resolution_deadline.is_not(None),
        or_(
            and_(Ticket.resolved_at.is_(None), Ticket.sla_resolution_deadline < now),
            Ticket.resolved_at > Ticket.sla_resolution_deadline,
        ),
    )
    stmt = select(
        func.count(),
        count_if(Ticket.status.in_(OPEN_STATUSES)),
        count_if(Ticket.created_at >= today_start),
        count_if(response_breach),
        count_if(resolution_breach),
        count_if(Ticket.status.in_((Status.RESOLVED.value, Status.CLOSED.value))),
    ).where(*where)
    response_s = _seconds_between(engine, Ticket.first_responded_at, Ticket.created_at)
    responded = [*where, Ticket.first_responded_at.is_not(None)]
    with engine.connect() as conn:
        total, open_, today, resp, resol, resolved = conn.execute(stmt).one()
        if engine.dialect.name == "postgresql":
            median = conn.execute(
                select(func.percentile_cont(0.5).within_group(response_s.asc())).where(*responded)
            ).scalar_one()
        else:
            n = conn.execute(select(func.count()).select_from(Ticket).where(*responded)).scalar_one()
            median = None
            if n:
                ordered = select(response_s.label("s")).where(*responded).order_by(response_s)
                middle = conn.execute(ordered.limit(2 - n % 2).offset((n - 1) // 2)).scalars().all()
                median = sum(middle) / len(middle)
    return Kpis(
        total=int(total),
        open=int(open_),
        created_today=int(today),
        response_breaches=int(resp),
        resolution_breaches=int(resol),
        resolved=int(resolved),
        median_first_response_s=None if median is None else float(median),
    )


def created_and_resolved_by_day(
    engine: Engine, scope: Scope, filters: TicketFilters | None = None, *, days: int = 30,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Per local day over the last ``days``: tickets created, resolved and the open backlog.

    Bucketing is done in SQL on 15-minute UTC slots and folded into local
    days here. Every real UTC offset is a multiple of 15 minutes (India +5:30,
    Nepal +5:45, Newfoundland -3:30), so a slot never straddles a local
    midnight; whole hours would put e.g. 00:29 Newfoundland time on the
    previous day. No per-dialect time zone functions are needed.
    """
    days = whole_number(days, "days", 1, 3660)
    now = now or datetime.now(timezone.utc)
    local_today = now.astimezone(scope.tzinfo).date()
    start = local_day_start(local_today - timedelta(days=days - 1), scope)
    where = [*scope_conditions(scope), *filter_conditions(scope, filters)]
    if engine.dialect.name == "postgresql":
        def slot(col):
            quarter = func.floor(func.extract("minute", col) / 15) * literal_column("interval '15 minutes'")
            return func.date_trunc("hour", col) + quarter
    else:
        def slot(col):
            minute = cast(func.strftime("%M", col), Integer) // 15 * 15
            two_digits = func.substr(literal("0", String).concat(cast(minute, String)), -2)
            return func.strftime("%Y-%m-%d %H:", col, type_=String).concat(two_digits).concat(":00")
    created = select(slot(Ticket.created_at).label("h"), func.count()).where(*where, Ticket.created_at >= start).group_by("h")
    resolved = select(slot(Ticket.resolved_at).label("h"), func.count()).where(*where, Ticket.resolved_at >= start).group_by("h")
    open_before = select(func.count()).select_from(Ticket).where(
        *where, Ticket.created_at < start, or_(Ticket.resolved_at.is_(None), Ticket.resolved_at >= start)
    )
    with engine.connect() as conn:
        created_rows = conn.execute(created).all()
        resolved_rows = conn.execute(resolved).all()
        backlog_start = int(conn.execute(open_before).scalar_one())
    index = pd.date_range(local_today - timedelta(days=days - 1), local_today, freq="D").date

    def by_day(rows) -> pd.Series:
        if not rows:
            return pd.Series(0, index=index, dtype="int64")
        stamps = pd.to_datetime([r[0] for r in rows], utc=True).tz_convert(scope.timezone)
        s = pd.Series([int(r[1]) for r in rows], index=stamps.date)
        return s.groupby(level=0).sum().reindex(index, fill_value=0).astype("int64")

    frame = pd.DataFrame({"created": by_day(created_rows), "resolved": by_day(resolved_rows)}, index=index)
    frame["backlog"] = backlog_start + (frame["created"] - frame["resolved"]).cumsum()
    frame.index.name = "day"
    return frame


def visible_ward_ids(engine: Engine, scope: Scope) -> list[str]:
    """Ward ids the scope may choose from (a councillor: only their own)."""
    from .models import Ward

    if scope.is_councillor:
        return [scope.ward_id]  # type: ignore[list-item]
    with engine.connect() as conn:
        rows = conn.execute(
            select(Ward.id).where(Ward.municipality_id == scope.municipality_id).order_by(Ward.number, Ward.id)
        ).scalars().all()
    return list(rows)


def ticket_visibility(engine: Engine, ticket_id: uuid.UUID | str) -> Literal["missing", "sensitive", "visible"]:
    """Whether a ticket named by an event is sensitive in the database.

    Deliberately unscoped and answering only this one question: the live hub
    uses it to drop events about sensitive tickets before any routing.
    """
    try:
        tid = ticket_id if isinstance(ticket_id, uuid.UUID) else uuid.UUID(str(ticket_id))
    except ValueError:
        return "missing"
    return ticket_visibilities(engine, [tid]).get(tid, "missing")


def ticket_visibilities(
    engine: Engine, ticket_ids: Sequence[uuid.UUID], tracking_numbers: Sequence[str] = ()
) -> dict[uuid.UUID | str, Literal["sensitive", "visible"]]:
    """``ticket_visibility`` for many tickets in one query (the hub checks events in batches).

    Tickets may be named by id or by tracking number (the ticketing system's
    own messages often carry only the latter); the result has an entry under
    each name that matched. Names without a ticket are absent ("missing").
    """
    ids = list(dict.fromkeys(ticket_ids))
    numbers = list(dict.fromkeys(t for t in tracking_numbers if t))
    if not ids and not numbers:
        return {}
    stmt = select(
        Ticket.id, Ticket.tracking_number,
        case((not_sensitive(), literal("visible")), else_=literal("sensitive")),
    ).where(or_(Ticket.id.in_(ids), Ticket.tracking_number.in_(numbers)))
    found: dict[uuid.UUID | str, Literal["sensitive", "visible"]] = {}
    wanted_ids, wanted_numbers = set(ids), set(numbers)
    with engine.connect() as conn:
        for ticket_id, tracking_number, visibility in conn.execute(stmt):
            if ticket_id in wanted_ids:
                found[ticket_id] = visibility
            if tracking_number in wanted_numbers:
                found[tracking_number] = visibility
    return found
