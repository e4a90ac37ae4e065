"""Property-based tests of the Scope gate (hypothesis), on SQLite and PostgreSQL.

Each example inserts random tickets for a fresh municipality and a fresh
"other" municipality (sensitive by flag or by ``gbv`` in any case, wards
including None, hostile text), picks a random user and random filters, and
checks every read path against a plain-Python oracle: the rows are exactly
the visible ones, and every count and aggregate agrees with them.
"""
from __future__ import annotations

import statistics
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data import NotAuthorized, TicketFilters
from data.filters import STATUSES
from data.models import OPEN_STATUSES, VISIBLE_CATEGORIES, Role
from data.scope import Scope
from data.aggregates import (
    MEASURES,
    Kpis,
    counts_by,
    counts_by_pair,
    created_and_resolved_by_day,
    ticket_breakdown,
    ticket_figures,
    ticket_kpis,
)
from data.tickets import (
    count_tickets,
    iter_ticket_chunks,
    local_day_start,
    scoped_tickets,
    ticket_page,
)

from .helpers.databases import add_tickets, ticket_record
from .helpers.sensitivity import hidden, shown_category

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
WARDS = ("W1", "W2", "W3")
# Raw categories as the ticketing system may store them: mixed case, spaces and
# invisible characters, unknown ones (hidden: fail closed), and the sensitive
# category spelled every way (tests.test_sensitivity_properties generates more).
RAW_CATEGORIES = (*VISIBLE_CATEGORIES, "Water", "ROADS", " roads\u200b", "unknown-thing", "gbv", "GBV", "Gbv",
                  "GBV ", "\uff27\uff22\uff36")
TEXT = st.text(alphabet="abcXYZéÉ %_\\'\";-", max_size=16)
# Searches made of LIKE wildcards and the escape character: they must match literally.
WILDCARDS = st.text(alphabet="%_\\a", min_size=1, max_size=3)
TIMEZONES = ("Africa/Johannesburg", "UTC", "Pacific/Kiritimati", "America/St_Johns", "Asia/Kathmandu")
SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def is_sensitive(row: dict) -> bool:
    return hidden(row)


def shown(row: dict, column: str):
    """What a read shows of ``column``: the category as staff see it, anything else as stored."""
    return shown_category(row["category"]) if column == "category" else row[column]


@st.composite
def ticket_rows(draw, tenant_id: uuid.UUID) -> dict:
    created = NOW - timedelta(seconds=draw(st.integers(0, 20 * 86400)))
    age = (NOW - created).total_seconds()

    def after_created() -> datetime | None:
        if not draw(st.booleans()):
            return None
        return created + timedelta(seconds=draw(st.integers(0, int(age))))

    def deadline() -> datetime | None:
        hours = draw(st.one_of(st.none(), st.integers(1, 200)))
        return None if hours is None else created + timedelta(hours=hours)

    return ticket_record(
        tenant_id,
        ward_id=draw(st.sampled_from((*WARDS, None))),
        category=draw(st.sampled_from(RAW_CATEGORIES)),
        status=draw(st.sampled_from((*STATUSES, "reopened"))),
        severity=draw(st.sampled_from(("low", "medium", "high", "critical"))),
        description=draw(TEXT),
        address=draw(st.one_of(st.none(), TEXT)),
        is_sensitive=draw(st.booleans()),
        created_at=created,
        sla_response_deadline=deadline(),
        sla_resolution_deadline=deadline(),
        first_responded_at=after_created(),
        resolved_at=after_created(),
    )


@st.composite
def worlds(draw) -> tuple[uuid.UUID, list[dict]]:
    """Tickets of our municipality and of another one, inserted together."""
    ours, other = uuid.uuid4(), uuid.uuid4()
    rows = draw(st.lists(ticket_rows(ours), max_size=30)) + draw(st.lists(ticket_rows(other), max_size=10))
    return ours, rows


@st.composite
def filter_values(draw, rows: list[dict]) -> TicketFilters:
    days = sorted(draw(st.lists(st.dates(NOW.date() - timedelta(days=22), NOW.date() + timedelta(days=1)),
                                min_size=2, max_size=2)))
    texts = [t for r in rows for t in (r["description"], r["address"], r["tracking_number"]) if t]
    search = draw(st.one_of(
        st.just(""), TEXT, WILDCARDS,
        # A slice of stored text, so that searches also find something.
        st.sampled_from(texts).flatmap(lambda t: st.tuples(st.integers(0, len(t)), st.integers(0, 5)).map(
            lambda ab: t[ab[0]:ab[0] + ab[1]])) if texts else st.just(""),
    ))
    return TicketFilters(
        statuses=tuple(draw(st.sets(st.sampled_from(STATUSES), max_size=3))),
        categories=tuple(draw(st.sets(st.sampled_from(VISIBLE_CATEGORIES), max_size=3))),
        wards=tuple(draw(st.sets(st.sampled_from(WARDS), max_size=2))),
        created_from=days[0] if draw(st.booleans()) else None,
        created_to=days[1] if draw(st.booleans()) else None,
        search=search,
    )


@dataclass(frozen=True)
class User:
    role: str
    ward_id: str | None
    timezone: str


users = st.builds(
    User, st.sampled_from([r.value for r in Role]), st.sampled_from((*WARDS, None)), st.sampled_from(TIMEZONES)
)


def expected_rows(rows: list[dict], scope: Scope, filters: TicketFilters) -> list[dict]:
    """The oracle: the design's visibility rules and filter meanings, in Python."""

    def visible(r: dict) -> bool:
        if r["tenant_id"] != scope.municipality_id or is_sensitive(r):
            return False
        if scope.is_councillor and r["ward_id"] != scope.ward_id:
            return False
        if filters.statuses and r["status"] not in filters.statuses:
            return False
        if filters.categories and shown_category(r["category"]) not in filters.categories:
            return False
        if filters.wards and not scope.is_councillor and r["ward_id"] not in filters.wards:
            return False
        local_day = r["created_at"].astimezone(scope.tzinfo).date()
        if filters.created_from and local_day < filters.created_from:
            return False
        if filters.created_to and local_day > filters.created_to:
            return False
        needle = filters.search.lower()
        return not needle or any(needle in (r[k] or "").lower() for k in ("tracking_number", "description", "address"))

    return [r for r in rows if visible(r)]


def check_rows(engine, scope, filters, expected: list[dict], data) -> None:
    ids = {str(r["id"]) for r in expected}
    frame = scoped_tickets(engine, scope, filters)
    assert sorted(frame["id"]) == sorted(ids)
    assert count_tickets(engine, scope, filters) == len(ids)
    page_size = data.draw(st.integers(1, 7), label="page_size")
    first = ticket_page(engine, scope, filters, page=1, page_size=page_size)
    paged = list(first.frame["id"])
    for page in range(2, first.page_count + 1):
        paged += list(ticket_page(engine, scope, filters, page=page, page_size=page_size).frame["id"])
    assert first.total == len(ids) and paged == list(frame["id"])  # same order, no repeats, no gaps
    chunk_size = data.draw(st.integers(1, 9), label="chunk_size")
    chunks = list(iter_ticket_chunks(engine, scope, filters, chunk_size=chunk_size))
    assert all(len(c) <= chunk_size for c in chunks)
    assert [i for c in chunks for i in c["id"]] == list(frame["id"])


def check_aggregates(engine, scope, filters, expected: list[dict]) -> None:
    for dimension in ("status", "category", "severity", "ward_id", "language"):
        series = counts_by(engine, scope, dimension, filters)
        oracle = Counter(shown(r, dimension) if r[dimension] is not None else "(none)" for r in expected)
        assert series.to_dict() == dict(oracle)
        assert not any(str(k).lower() == "gbv" for k in series.index)
    pairs = counts_by_pair(engine, scope, "ward_id", "category", filters)
    assert int(pairs["tickets"].sum()) == len(expected)

    kpis = ticket_kpis(engine, scope, filters, now=NOW)
    assert kpis.total == len(expected)
    breakdown = ticket_breakdown(engine, scope, filters, ("category", "status", "ward_id"), now=NOW)
    assert Kpis.from_breakdown(breakdown, kpis.median_first_response_s) == kpis
    cells = breakdown[["category", "status", "ward_id", "tickets"]].itertuples(index=False)
    assert {(c, s, w): n for c, s, w, n in cells} == dict(Counter((shown(r, "category"), r["status"], r["ward_id"])
                                                                for r in expected))
    assert kpis.open == sum(r["status"] in OPEN_STATUSES for r in expected)
    assert kpis.resolved == sum(r["status"] in ("resolved", "closed") for r in expected)
    today = local_day_start(NOW.astimezone(scope.tzinfo).date(), scope)
    assert kpis.created_today == sum(r["created_at"] >= today for r in expected)

    def breached(deadline, done) -> bool:
        return deadline is not None and ((done is None and deadline < NOW) or (done is not None and done > deadline))

    assert kpis.response_breaches == sum(breached(r["sla_response_deadline"], r["first_responded_at"]) for r in expected)
    assert kpis.resolution_breaches == sum(breached(r["sla_resolution_deadline"], r["resolved_at"]) for r in expected)
    waits = [(r["first_responded_at"] - r["created_at"]).total_seconds() for r in expected if r["first_responded_at"]]
    if waits:
        assert kpis.median_first_response_s == pytest.approx(statistics.median(waits), abs=0.5)
    else:
        assert kpis.median_first_response_s is None

    days = 7
    trend = created_and_resolved_by_day(engine, scope, filters, days=days, now=NOW)
    start_day = NOW.astimezone(scope.tzinfo).date() - timedelta(days=days - 1)
    created = Counter(r["created_at"].astimezone(scope.tzinfo).date() for r in expected)
    resolved = Counter(r["resolved_at"].astimezone(scope.tzinfo).date() for r in expected if r["resolved_at"])
    assert trend["created"].to_dict() == {d: created.get(d, 0) for d in trend.index}
    assert trend["resolved"].to_dict() == {d: resolved.get(d, 0) for d in trend.index}
    assert trend.index[0] == start_day
    # Every row lies before NOW, so the backlog at the end is what is still unresolved.
    assert int(trend["backlog"].iloc[-1]) == sum(r["resolved_at"] is None for r in expected)

    # The dashboard's one-scan figures (grouping sets on PostgreSQL) are exactly the two above.
    def cells(frame, dims):
        return {tuple(r[:len(dims)]): tuple(r[len(dims):]) for r in frame[[*dims, *MEASURES]].itertuples(index=False)}

    dims = ("category", "status", "ward_id")
    figures = ticket_figures(engine, scope, filters, dims, days=days, now=NOW)
    assert cells(figures.breakdown, dims) == cells(breakdown, dims) and len(figures.breakdown) == len(breakdown)
    assert list(figures.breakdown.columns) == list(breakdown.columns)
    assert figures.by_day.equals(trend)
    overall = ticket_figures(engine, scope, filters, days=days, now=NOW)  # no dims: one row, zeros when none match
    assert cells(overall.breakdown, ()) == {(): (kpis.total, kpis.open, kpis.resolved, kpis.created_today,
                                                 kpis.response_breaches, kpis.resolution_breaches)}


@SETTINGS
@given(world=worlds(), user=users, data=st.data())
def test_no_read_path_ever_leaks_and_every_aggregate_agrees_with_the_rows(engine, world, user, data):
    municipality_id, rows = world
    add_tickets(engine, rows)
    try:
        scope = Scope(municipality_id=municipality_id, role=user.role, ward_id=user.ward_id, timezone=user.timezone)
    except NotAuthorized:
        # Fail closed: no dashboard role, or a councillor without a ward.
        assert user.role in ("field_worker", "citizen") or (user.role == "ward_councillor" and user.ward_id is None)
        return
    assert user.role in ("admin", "manager", "ward_councillor")
    drawn = data.draw(filter_values(rows), label="filters")
    # No filters and search alone as well: random filters alone narrow so
    # much that a leak could hide behind them.
    for filters in (TicketFilters(), TicketFilters(search=drawn.search), drawn):
        expected = expected_rows(rows, scope, filters)
        assert not any(is_sensitive(r) or r["tenant_id"] != municipality_id for r in expected)
        if scope.is_councillor:
            assert all(r["ward_id"] == scope.ward_id for r in expected)
        check_rows(engine, scope, filters, expected, data)
        check_aggregates(engine, scope, filters, expected)


@SETTINGS
@given(world=worlds(), ward=st.sampled_from(WARDS), forged=st.sets(st.sampled_from((*WARDS, "X-W999")), min_size=1))
def test_councillor_sees_only_own_ward_whatever_ward_filter_is_forged(engine, world, ward, forged):
    municipality_id, rows = world
    add_tickets(engine, rows)
    councillor = Scope(municipality_id=municipality_id, role="ward_councillor", ward_id=ward)
    frame = scoped_tickets(engine, councillor, TicketFilters(wards=tuple(forged)))
    own = {str(r["id"]) for r in rows
           if r["tenant_id"] == municipality_id and r["ward_id"] == ward and not is_sensitive(r)}
    assert set(frame["id"]) == own
    assert set(frame["ward_id"]) <= {ward}
