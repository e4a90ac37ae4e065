"""Scoped ticket reads: rows, pages, chunks, frames and counts (aggregates: ``data.aggregates``).

Every public function here takes a Scope; ``scoped_select`` is the only
place a ticket SELECT is built, so the tenancy, ward and sensitivity rules
(docs/architecture.md, invariants 1-3) cannot be forgotten by a caller. The counts, the
table, the charts and the exports all come from the same statement, so they
can never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable, Iterator, Literal, Sequence

import pandas as pd
from sqlalchemy import ColumnElement, Engine, Select, Table, and_, case, false, func, literal, literal_column, or_, select

from . import summary_tables
from .errors import InvalidFilter
from .filters import TicketFilters, applied_filters
from .models import KnownCategory, Severity, Ticket
from .scope import Scope
from .sensitivity import DEFAULT_CATEGORIES

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


def visible_ticket() -> ColumnElement[bool]:
    """The sensitivity rule as SQL (data.sensitivity): not flagged, and of a known category.

    ``category_key`` is written by the database (migration 0006); a NULL flag or key
    makes the condition NULL, and a row is then left out: fail closed. The ticketing
    system's own categories are known by definition and written out as a list, which
    PostgreSQL hashes; only the few other rows (gbv, unknown spellings) consult
    ``ticket_categories`` for categories an admin added. Against the table alone the
    planner joins every visible row to it: a whole municipality's count took 329 ms
    instead of 265 ms at 970,065 visible tickets (docs/performance.md).
    """
    return and_(func.coalesce(Ticket.is_sensitive, false()) == false(), known_category(Ticket.category_key))


def known_category(key: ColumnElement) -> ColumnElement[bool]:
    """The category half of the sensitivity rule: ``key`` is a default or an admin-added category."""
    return or_(key.in_(DEFAULT_CATEGORIES), key.in_(select(KnownCategory.key).scalar_subquery()))


#: Severity sorts by how severe, not by spelling (alphabetically: critical, high, low, medium).
#: A value outside the enum sorts above critical: it stands out rather than hiding among the low.
SEVERITY_RANK = {severity.value: rank for rank, severity in enumerate(Severity)}


def sort_column(name: str) -> ColumnElement:
    """The SQL a ticket column is sorted by: severity by its rank, anything else as read."""
    if name == "severity":
        return case(SEVERITY_RANK, value=Ticket.severity, else_=len(SEVERITY_RANK))
    return ticket_column(name)


def ticket_column(name: str) -> ColumnElement:
    """The SQL a ticket column is read, grouped and sorted as: the category as its key
    (``Water`` and ``water\u200b`` are one category), everything else as stored."""
    return Ticket.category_key if name == "category" else getattr(Ticket, name)


def scope_conditions(scope: Scope) -> list[ColumnElement[bool]]:
    """The gate: tenant, ward (councillors) and sensitivity, as SQL."""
    if not isinstance(scope, Scope):  # a forged dict or None must not pass
        raise TypeError("a Scope is required for every ticket read")
    conditions: list[ColumnElement[bool]] = [Ticket.tenant_id == scope.municipality_id, visible_ticket()]
    if scope.is_councillor:
        conditions.append(Ticket.ward_id == scope.ward_id)
    return conditions


def summarisable(scope: Scope, filters: TicketFilters | None) -> bool:
    """Whether the summaries can apply ``filters`` (all but dates and search) under ``scope``."""
    filters = applied_filters(scope, filters)
    return not (filters.created_from or filters.created_to or filters.search)


def summary_conditions(table: Table, scope: Scope, filters: TicketFilters | None) -> list[ColumnElement[bool]]:
    """The gate and the filters over a summary table (data.summaries) instead of ``tickets``.

    The same rules as ``scope_conditions`` and ``filter_conditions``: tenant, ward
    (councillors), a known category, and the status, category and ward filters.
    Flagged tickets are never in a summary (its triggers leave them out). The
    filters a summary cannot apply (dates, search) are refused: the caller scans.
    """
    if not isinstance(scope, Scope):
        raise TypeError("a Scope is required for every ticket read")
    if not summarisable(scope, filters):
        raise InvalidFilter("a summary cannot apply date or search filters")
    filters = applied_filters(scope, filters)
    conditions: list[ColumnElement[bool]] = [table.c.tenant_id == scope.municipality_id,
                                             known_category(table.c.category_key)]
    wards = (scope.ward_id,) if scope.is_councillor else filters.wards
    if wards:
        ward = table.c.get("ward_id")
        if ward is None:  # a municipality-wide summary: it cannot tell wards apart
            raise InvalidFilter(f"{table.name} cannot apply a ward")
        # The summaries' unique indexes key the ward as coalesce(ward_id, ''): the same expression
        # here lets a ward's rows be found by index; ``ward IN ...`` keeps NULL wards out.
        conditions += [func.coalesce(ward, literal_column("''")).in_(wards), ward.in_(wards)]
    if filters.statuses:
        conditions.append(table.c.status.in_(filters.statuses))
    if filters.categories:
        conditions.append(table.c.category_key.in_(filters.categories))
    return conditions


def local_day_start(day: date, scope: Scope) -> datetime:
    """Midnight of ``day`` in the scope's time zone, as an aware UTC datetime."""
    return datetime.combine(day, time.min, tzinfo=scope.tzinfo).astimezone(timezone.utc)


def filter_conditions(scope: Scope, filters: TicketFilters | None) -> list[ColumnElement[bool]]:
    # Only what applies under this scope (a councillor's ward filter is dropped there):
    # the same function gives the filters an export records.
    filters = applied_filters(scope, filters)
    conditions: list[ColumnElement[bool]] = []
    if filters.statuses:
        conditions.append(Ticket.status.in_(filters.statuses))
    if filters.categories:
        conditions.append(Ticket.category_key.in_(filters.categories))
    if filters.wards:
        conditions.append(Ticket.ward_id.in_(filters.wards))
    if filters.created_from:
        conditions.append(Ticket.created_at >= local_day_start(filters.created_from, scope))
    if filters.created_to:
        conditions.append(Ticket.created_at < local_day_start(filters.created_to + timedelta(days=1), scope))
    if filters.search:
        # search_text is tracking number, description and address, lower-cased, joined
        # by a separator a search never contains (migration 0003); the pattern is
        # lower-cased by the same database function, so both sides fold alike.
        pattern = f"%{_escape_like(filters.search)}%"
        conditions.append(Ticket.search_text.like(func.lower(literal(pattern)), escape="\\"))
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
    stmt = select(*(ticket_column(c).label(c) for c in columns)).where(
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
        col = sort_column(column)
        ordered = col.desc() if direction == "desc" else col.asc()
        # Missing values last either way. Only where a column can be NULL: an
        # explicit NULLS LAST on a NOT NULL column stops PostgreSQL from reading
        # an index backwards (created_at DESC: a full sort of 1,000,000 rows
        # instead of 25 index entries).
        clauses.append(ordered.nulls_last() if Ticket.__table__.c[column].nullable else ordered)
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


def page_rows(
    engine: Engine,
    scope: Scope,
    filters: TicketFilters | None = None,
    *,
    page: int = 1,
    page_size: int = 50,
    sort: SortSpec | None = DEFAULT_SORT,
    columns: Sequence[str] = TICKET_COLUMNS,
) -> pd.DataFrame:
    """The rows of one page (1-based) of visible tickets, without counting them all (``ticket_page``).

    Page 1 in the default order reads the created-at index until it has
    ``page_size`` matches, or the few matches a rare search term has by the
    trigram index: at 10,000,000 tickets 3-6 ms for 'street' (5.4 million
    matches), 'pipe' or '0000123', where the count behind a total reads every
    match (seconds for 'street').
    """
    whole_number(page, "page", 1, 10**9)
    whole_number(page_size, "page size", 1, MAX_PAGE_SIZE)
    return scoped_tickets(engine, scope, filters, columns=columns, sort=sort, limit=page_size,
                          offset=(page - 1) * page_size)


def ticket_page(
    engine: Engine,
    scope: Scope,
    filters: TicketFilters | None = None,
    *,
    page: int = 1,
    page_size: int = 50,
    sort: SortSpec | None = DEFAULT_SORT,
    columns: Sequence[str] = TICKET_COLUMNS,
    total: int | Callable[[], int] | None = None,
) -> TicketPage:
    """One page (1-based) of visible tickets and the total count: ``page_rows`` and ``count_tickets``.

    ``total``: the count when the caller already has it for the same scope
    and filters, which saves a COUNT over every matching row; or a function
    that gives it, called once the rows are read. (The dashboard's table
    reads the two apart: ``components.table``.)
    """
    frame = page_rows(engine, scope, filters, page=page, page_size=page_size, sort=sort, columns=columns)
    if total is None:
        total = count_tickets(engine, scope, filters)
    elif callable(total):
        total = total()
    return TicketPage(frame=frame, total=int(total), page=page, page_size=page_size)


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
    """How many tickets ``scoped_select`` returns.

    On PostgreSQL, unless a date or search filter applies, the sum of the summary
    cells (migration 0009): a few thousand rows, however many tickets there are.
    """
    if summarisable(scope, filters) and summary_tables.available(engine):
        cells = summary_tables.cells
        stmt = select(func.coalesce(func.sum(cells.c.tickets), 0)).where(*summary_conditions(cells, scope, filters))
    else:
        stmt = select(func.count()).select_from(Ticket).where(*scope_conditions(scope), *filter_conditions(scope, filters))
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


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
