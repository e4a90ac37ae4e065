"""The summary tables (migration 0009) against the scans they replace, on PostgreSQL.

Random tickets go in, then random changes written straight to ``tickets`` as
the ticketing system would (status, resolution, first response, sensitivity,
category, ward, deadlines, deletes, multi-row updates, a category made known
and forgotten); then, for random scopes, filters, periods and clocks (clocks
on deadlines to the microsecond and on hour and day boundaries too), every
figure the dashboard reads from the summaries equals the one a scan of the
tickets gives (``ticket_breakdown``, ``created_and_resolved_by_day``: the scans
tests/test_properties.py holds to a plain-Python oracle), the table's total
equals the rows, and the median equals the median of the rows' response times.
The deadlines-ahead marks (migration 0013) move at random points among the
changes, or never, so clocks fall before a mark, after it and hours past it.
"""
from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, event, insert, select, text, update
from sqlalchemy.exc import DBAPIError

import data.seed as seeding
from data import TicketFilters
from data.aggregates import (
    MEASURES,
    created_and_resolved_by_day,
    median_first_response_s,
    summary_figures,
    ticket_breakdown,
    ticket_figures,
)
from data.categories import add_known_category
from data.db import _alembic_config, make_engine, migrate
from data.filters import STATUSES
from data.models import KnownCategory, Municipality, Ticket
from data.scope import Scope
from data.summaries import advance_marks
from data.tickets import count_tickets, scoped_tickets

from .helpers.databases import add_tickets, empty_pg_database, scope_of, ticket_record

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
WARDS = ("W1", "W2", "W3")
TIMEZONES = ("Africa/Johannesburg", "UTC", "Pacific/Kiritimati", "America/St_Johns", "Asia/Kathmandu")
RAW_CATEGORIES = ("water", "Water", " roads\u200b", "electricity", "parks", "gbv", "GBV ", "unknown-thing")
DIMS = ("category", "status", "ward_id")
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def moment(draw) -> datetime:
    return NOW + timedelta(seconds=draw(st.integers(-25 * 86400, 5 * 86400)))


@st.composite
def ticket_values(draw, extra_category: str) -> dict:
    created = moment(draw)

    def maybe_after() -> datetime | None:
        return None if draw(st.booleans()) else created + timedelta(seconds=draw(st.integers(-600, 12 * 86400)))

    def deadline() -> datetime | None:
        return None if draw(st.integers(0, 4)) == 0 else created + timedelta(seconds=draw(st.integers(0, 9 * 86400)))

    return {
        "ward_id": draw(st.sampled_from((*WARDS, None))),
        "category": draw(st.sampled_from((*RAW_CATEGORIES, extra_category))),
        "status": draw(st.sampled_from((*STATUSES, "reopened"))),
        "is_sensitive": draw(st.sampled_from((False, False, False, True))),
        "created_at": created,
        "sla_response_deadline": deadline(),
        "sla_resolution_deadline": deadline(),
        "first_responded_at": maybe_after(),
        "resolved_at": maybe_after(),
    }


@st.composite
def changes(draw, extra_category: str) -> list[tuple[str, object]]:
    """Statements as the ticketing system would run them: (kind, what) pairs."""
    kinds = st.sampled_from(("set", "set", "set", "delete", "insert", "ward_wide", "known", "forget", "advance"))
    out = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(kinds)
        if kind == "set":
            column = draw(st.sampled_from(("status", "resolved_at", "first_responded_at", "is_sensitive", "category",
                                           "ward_id", "sla_response_deadline", "sla_resolution_deadline", "created_at")))
            value = draw(ticket_values(extra_category))[column]
            out.append((kind, (draw(st.integers(0, 10**6)), column, value)))
        elif kind == "delete":
            out.append((kind, draw(st.integers(0, 10**6))))
        elif kind == "insert":
            out.append((kind, draw(st.lists(ticket_values(extra_category), min_size=1, max_size=3))))
        elif kind == "ward_wide":
            out.append((kind, (draw(st.sampled_from((*WARDS, None))), draw(st.sampled_from(STATUSES)),
                               moment(draw) if draw(st.booleans()) else None)))
        elif kind == "advance":  # the marks to a clock's hour (a later one than before, or no move)
            out.append((kind, NOW + timedelta(seconds=draw(st.integers(-30 * 86400, 10 * 86400)))))
        else:
            out.append((kind, None))
    return out


def apply_changes(engine: Engine, tenant: uuid.UUID, ids: list[uuid.UUID], extra_category: str, steps) -> None:
    """Run ``steps`` one transaction each; ``ids``: the tenant's tickets in insertion order (kept up to date)."""
    for kind, what in steps:
        if kind == "advance":
            advance_marks(engine, what, tenant=tenant)
            continue
        with engine.begin() as conn:
            if kind == "set" and ids:
                index, column, value = what
                conn.execute(update(Ticket).where(Ticket.id == ids[index % len(ids)]).values({column: value}))
            elif kind == "delete" and ids:
                conn.execute(delete(Ticket).where(Ticket.id == ids.pop(what % len(ids))))
            elif kind == "insert":
                records = [ticket_record(tenant, **values) for values in what]
                conn.execute(insert(Ticket), records)
                ids.extend(r["id"] for r in records)
            elif kind == "ward_wide":  # one statement over many rows, as a bulk close would be
                ward, status, resolved = what
                conn.execute(update(Ticket).where(Ticket.tenant_id == tenant, Ticket.ward_id.is_not_distinct_from(ward))
                             .values(status=status, resolved_at=resolved))
            elif kind == "known":
                conn.execute(text("INSERT INTO ticket_categories (key, added_at) VALUES (:k, now()) "
                                  "ON CONFLICT (key) DO NOTHING"), {"k": extra_category})
            elif kind == "forget":
                conn.execute(delete(KnownCategory).where(KnownCategory.key == extra_category))


def cells(frame, dims=DIMS) -> dict:
    return {tuple(r[:len(dims)]): tuple(r[len(dims):]) for r in frame[[*dims, *MEASURES]].itertuples(index=False)}


def assert_summaries_equal_scans(engine: Engine, scope: Scope, filters: TicketFilters, now: datetime,
                                 days: int, dims=DIMS) -> None:
    summarised = summary_figures(engine, scope, filters, dims, days=days, now=now)
    assert summarised is not None, "the summaries did not answer"
    scanned = ticket_breakdown(engine, scope, filters, dims, now=now)
    assert cells(summarised.breakdown, dims) == cells(scanned, dims), (scope, filters, now)
    assert len(summarised.breakdown) == len(scanned) and list(summarised.breakdown.columns) == list(scanned.columns)
    trend = created_and_resolved_by_day(engine, scope, filters, days=days, now=now)
    assert summarised.by_day.equals(trend), (scope, filters, now, summarised.by_day, trend)
    assert ticket_figures(engine, scope, filters, dims, days=days, now=now).by_day.equals(trend)


def assert_total_and_median(engine: Engine, scope: Scope, filters: TicketFilters) -> None:
    frame = scoped_tickets(engine, scope, filters, columns=("id", "created_at", "first_responded_at"), sort=None)
    assert count_tickets(engine, scope, filters) == len(frame)
    waits = [(r - c).total_seconds() for c, r in zip(frame["created_at"], frame["first_responded_at"]) if r is not None
             and r == r]  # NaT is not equal to itself
    median = median_first_response_s(engine, scope, filters)
    if waits:
        assert median == pytest.approx(statistics.median(waits), abs=1e-3)
    else:
        assert median is None


@st.composite
def readers(draw):
    """(role, ward, filters, clock, days); a clock may be ("due", k, offset): the k-th resolution deadline + offset."""
    role = draw(st.sampled_from(("manager", "admin", "ward_councillor")))
    ward = draw(st.sampled_from(WARDS)) if role == "ward_councillor" else None
    filters = TicketFilters(
        statuses=tuple(draw(st.sets(st.sampled_from(STATUSES), max_size=2))),
        categories=tuple(draw(st.sets(st.sampled_from(("water", "roads", "electricity", "parks")), max_size=2))),
        wards=tuple(draw(st.sets(st.sampled_from(WARDS), max_size=2))),
    )
    clock = draw(st.one_of(
        st.just(NOW), st.integers(-30 * 86400, 10 * 86400).map(lambda s: NOW + timedelta(seconds=s)),
        # Exactly on a deadline (not yet breached), a microsecond either side, and on hour boundaries.
        st.tuples(st.just("due"), st.integers(0, 100), st.sampled_from((0, 1, -1))),
        st.integers(-30 * 24, 10 * 24).map(lambda h: NOW.replace(minute=0) + timedelta(hours=h)),
    ))
    return role, ward, filters, clock, draw(st.integers(1, 40))


@SETTINGS
@given(data=st.data(), zone=st.sampled_from(TIMEZONES))
def test_every_summary_figure_equals_the_scan_after_random_direct_writes(pg_engine, data, zone):
    tenant, other = uuid.uuid4(), uuid.uuid4()
    extra = f"cat_{uuid.uuid4().hex[:10]}"  # a category of this example alone: others' tests never see it
    with pg_engine.begin() as conn:
        conn.execute(insert(Municipality).values(id=tenant, name="M", slug=f"m-{tenant.hex}", timezone=zone))
    rows = [ticket_record(t, **data.draw(ticket_values(extra), label="ticket"))
            for t in [tenant] * data.draw(st.integers(0, 25), label="ours") + [other] * 3]
    add_tickets(pg_engine, rows)
    ids = [r["id"] for r in rows if r["tenant_id"] == tenant]
    apply_changes(pg_engine, tenant, ids, extra, data.draw(changes(extra), label="changes"))
    with pg_engine.connect() as conn:
        due = [d for (d,) in conn.execute(select(Ticket.sla_resolution_deadline).where(
            Ticket.tenant_id == tenant, Ticket.sla_resolution_deadline.is_not(None)).order_by(Ticket.sla_resolution_deadline))]
    for _ in range(3):
        role, ward, filters, clock, days = data.draw(readers(), label="reader")
        if isinstance(clock, tuple):
            _, k, offset = clock
            clock = due[k % len(due)] + timedelta(microseconds=offset) if due else NOW
        if data.draw(st.booleans(), label="marks to the clock's hour first"):
            advance_marks(pg_engine, clock, tenant=tenant)
        scope = Scope(municipality_id=tenant, role=role, ward_id=ward, timezone=zone)
        assert_summaries_equal_scans(pg_engine, scope, filters, clock, days)
        assert_summaries_equal_scans(pg_engine, scope, filters, clock, days, dims=())
        assert_total_and_median(pg_engine, scope, filters)
    with pg_engine.begin() as conn:  # the example's category must not outlive it
        conn.execute(delete(KnownCategory).where(KnownCategory.key == extra))


# ---- the invariants one at a time -------------------------------------------------------------------
def summary_total(engine: Engine, tenant: uuid.UUID) -> int:
    """Every ticket the summary cells count for ``tenant``, visible or not (the rule is applied when reading)."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(tickets), 0) FROM ticket_summary_cells "
                                     "WHERE tenant_id = :t"), {"t": tenant}).scalar_one())


def manager(tenant: uuid.UUID, zone: str = "Africa/Johannesburg") -> Scope:
    return Scope(municipality_id=tenant, role="manager", timezone=zone)


def test_a_ticket_flagged_sensitive_leaves_every_summary_in_the_same_statement(pg_engine):
    tenant = uuid.uuid4()
    ticket = ticket_record(tenant, created_at=NOW - timedelta(hours=30), first_responded_at=NOW - timedelta(hours=29),
                           sla_resolution_deadline=NOW - timedelta(hours=1))
    add_tickets(pg_engine, [ticket])
    add_tickets(pg_engine, [ticket_record(tenant, created_at=NOW - timedelta(hours=2))])
    figures = summary_figures(pg_engine, manager(tenant), dims=DIMS, now=NOW)
    assert int(figures.breakdown["tickets"].sum()) == 2 and int(figures.breakdown["resolution_breaches"].sum()) == 1
    with pg_engine.begin() as conn:  # the ticketing system's own statement, no OpsDash code involved
        conn.execute(text("UPDATE tickets SET is_sensitive = true WHERE id = :id"), {"id": ticket["id"]})
        # Inside the writer's own transaction already: no moment where a reader could count it.
        assert conn.execute(text("SELECT sum(tickets) FROM ticket_summary_cells WHERE tenant_id = :t"),
                            {"t": tenant}).scalar_one() == 1
    assert summary_total(pg_engine, tenant) == 1
    with pg_engine.connect() as conn:  # nothing of it anywhere: only the other ticket's day is left
        left = conn.execute(text(
            "SELECT (SELECT sum(created) FROM ticket_summary_days WHERE tenant_id = :t), "
            "(SELECT count(*) FROM ticket_summary_deadlines WHERE tenant_id = :t), "
            "(SELECT count(*) FROM ticket_summary_responses WHERE tenant_id = :t AND responded <> 0)"),
            {"t": tenant}).one()
    assert tuple(left) == (1, 0, 0)
    assert_summaries_equal_scans(pg_engine, manager(tenant), TicketFilters(), NOW, 30)
    assert count_tickets(pg_engine, manager(tenant)) == 1 and median_first_response_s(pg_engine, manager(tenant)) is None


def test_a_category_an_admin_adds_is_counted_at_once_and_forgetting_it_hides_it_again(pg_engine):
    tenant, key = uuid.uuid4(), f"cat_{uuid.uuid4().hex[:10]}"
    add_tickets(pg_engine, [ticket_record(tenant, category=f" {key.upper()}\u200b"),
                            ticket_record(tenant, category="gbv"), ticket_record(tenant)])
    assert count_tickets(pg_engine, manager(tenant)) == 1
    try:
        add_known_category(pg_engine, key)
        assert count_tickets(pg_engine, manager(tenant)) == 2
        figures = summary_figures(pg_engine, manager(tenant), dims=("category",), now=NOW)
        assert dict(zip(figures.breakdown["category"], figures.breakdown["tickets"])) == {"water": 1, key: 1}
    finally:
        with pg_engine.begin() as conn:
            conn.execute(delete(KnownCategory).where(KnownCategory.key == key))
    assert count_tickets(pg_engine, manager(tenant)) == 1
    assert summary_total(pg_engine, tenant) == 2  # gbv is never in a summary; an unknown key waits there, hidden


def test_a_scope_in_another_time_zone_scans_and_a_municipalitys_new_zone_recounts_its_days(pg_engine):
    tenant = uuid.uuid4()
    with pg_engine.begin() as conn:
        conn.execute(insert(Municipality).values(id=tenant, name="Z", slug=f"z-{tenant.hex}", timezone="UTC"))
    # Created and resolved close to midnight: their local day differs between the two zones.
    add_tickets(pg_engine, [ticket_record(tenant, created_at=NOW.replace(hour=23, minute=50) - timedelta(days=d),
                                          resolved_at=NOW.replace(hour=0, minute=10) - timedelta(days=d - 1))
                            for d in range(1, 6)])
    kathmandu = manager(tenant, "Asia/Kathmandu")
    assert summary_figures(pg_engine, kathmandu, now=NOW) is None  # days counted in UTC: scan
    assert ticket_figures(pg_engine, kathmandu, now=NOW).by_day.equals(
        created_and_resolved_by_day(pg_engine, kathmandu, now=NOW))
    with pg_engine.begin() as conn:
        conn.execute(update(Municipality).where(Municipality.id == tenant).values(timezone="Asia/Kathmandu"))
    assert_summaries_equal_scans(pg_engine, kathmandu, TicketFilters(), NOW, 10)
    assert summary_figures(pg_engine, manager(tenant, "UTC"), now=NOW) is None


def test_writers_at_once_on_the_same_cells_leave_the_summaries_exact(pg_engine, random_seed):
    """Four connections update, insert and delete tickets of one ward and category at the same time."""
    tenant = uuid.uuid4()
    rng = random.Random(random_seed)
    start = [ticket_record(tenant, ward_id=rng.choice(WARDS[:2]), created_at=NOW - timedelta(hours=rng.randint(1, 300)),
                           sla_response_deadline=NOW + timedelta(minutes=rng.randint(-600, 600)))
             for _ in range(200)]
    add_tickets(pg_engine, start)
    ids = [r["id"] for r in start]
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        own = random.Random(seed)
        try:
            for _ in range(40):
                with pg_engine.begin() as conn:
                    choice = own.random()
                    if choice < 0.6:
                        conn.execute(text("UPDATE tickets SET status = :s, first_responded_at = :r WHERE id = :id"),
                                     {"s": own.choice(STATUSES), "id": own.choice(ids),
                                      "r": None if own.random() < 0.5 else NOW - timedelta(minutes=own.randint(0, 900))})
                    elif choice < 0.8:
                        add = ticket_record(tenant, ward_id=own.choice(WARDS[:2]), created_at=NOW - timedelta(hours=1))
                        conn.execute(insert(Ticket), [add])
                    else:
                        conn.execute(text("UPDATE tickets SET ward_id = :w, is_sensitive = :f WHERE id = :id"),
                                     {"w": own.choice(WARDS), "f": own.random() < 0.2, "id": own.choice(ids)})
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(rng.randrange(10**9),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for clock in (NOW, NOW + timedelta(minutes=rng.randint(-600, 600))):
        assert_summaries_equal_scans(pg_engine, manager(tenant), TicketFilters(), clock, 15)
    assert_total_and_median(pg_engine, manager(tenant), TicketFilters())


def test_the_migration_builds_the_summaries_of_existing_tickets_and_truncate_empties_them():
    with empty_pg_database() as url:
        engine = make_engine(url)
        try:
            migrate(engine, "0008")
            result = seeding.seed(engine, tickets=3000, wards=4, municipalities=2, random_seed=20)
            migrate(engine)
            assert marks_at_the_current_hour(engine)
            for role, ward_index in (("manager", 0), ("ward_councillor", 1)):
                scope = scope_of(engine, result, role, ward_index=ward_index)
                assert_summaries_equal_scans(engine, scope, TicketFilters(), datetime.now(timezone.utc), 30)
                assert_total_and_median(engine, scope, TicketFilters())
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE tickets"))
            scope = scope_of(engine, result, "manager")
            assert count_tickets(engine, scope) == 0 and summary_total(engine, scope.municipality_id) == 0
            config = _alembic_config(engine)
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.downgrade(config, "0008")
            with engine.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM pg_class WHERE relname LIKE 'ticket_summary%' "
                                         "OR relname LIKE 'ix_tickets_%_due'")).scalar_one()
            assert left == 0
        finally:
            engine.dispose()


def test_a_bulk_load_into_an_empty_table_counts_the_summaries_once_and_the_trigger_is_back(monkeypatch):
    monkeypatch.setattr(seeding, "BULK_LOAD_ROWS", 100)
    with empty_pg_database() as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            result = seeding.seed(engine, tickets=600, wards=3, municipalities=1, random_seed=7)
            scope = scope_of(engine, result, "manager")
            assert_summaries_equal_scans(engine, scope, TicketFilters(), datetime.now(timezone.utc), 30)
            assert marks_at_the_current_hour(engine)  # the build moved them (migration 0013)
            before = count_tickets(engine, scope)
            add_tickets(engine, [ticket_record(scope.municipality_id, ward_id=result.municipalities[0]["wards"][0])])
            assert count_tickets(engine, scope) == before + 1
        finally:
            engine.dispose()


def test_a_ticket_written_while_the_summary_figures_load_is_in_none_of_their_queries(pg_engine):
    """The summaries' queries (and the tickets of the current hour) share one snapshot: a ticket committed
    after the first of them ran is in neither the counts nor the trend, then in both."""
    tenant = uuid.uuid4()
    now = datetime.now(timezone.utc)
    add_tickets(pg_engine, [ticket_record(tenant, created_at=now - timedelta(hours=h)) for h in (1, 2, 30)])
    written: list[str] = []

    def write_after_the_first_query(conn, cursor, statement, *_args):
        if "ticket_summary_zones" in statement and not written:
            add_tickets(pg_engine, [ticket_record(tenant, created_at=now - timedelta(minutes=5))])  # own connection
            written.append(statement)

    def figures():
        result = summary_figures(pg_engine, manager(tenant), None, DIMS, days=7, now=now)
        return int(result.breakdown["tickets"].sum()), int(result.by_day["created"].sum())

    event.listen(pg_engine, "after_cursor_execute", write_after_the_first_query)
    try:
        during = figures()
    finally:
        event.remove(pg_engine, "after_cursor_execute", write_after_the_first_query)
    assert written and during == (3, 3)
    assert figures() == (4, 4)


# ---- the deadlines ahead of a mark (migration 0013) ---------------------------------------------------
def marks_at_the_current_hour(engine: Engine) -> bool:
    with engine.connect() as conn:
        # This hour's start, or the last one's (the hour may have turned since the marks moved).
        return bool(conn.execute(text(
            "SELECT count(*) > 0 AND bool_and(as_of IN (h, h - interval '1 hour')) FROM ticket_summary_marks, "
            "LATERAL (SELECT date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS h) AS n")).scalar_one())


def mark_is(engine: Engine, tenant: uuid.UUID, value) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT as_of = CAST(:v AS timestamptz) FROM ticket_summary_marks "
                                      "WHERE tenant_id = :t"), {"v": value, "t": tenant}).scalar_one())


def deadlines_around(tenant: uuid.UUID, hours: range, rng: random.Random | None = None) -> list[dict]:
    """Pending tickets with response deadlines through ``hours`` around NOW (several an hour, odd minutes)."""
    rng = rng or random.Random(0)
    return [ticket_record(tenant, ward_id=rng.choice(WARDS[:2]), created_at=NOW - timedelta(days=3),
                          sla_response_deadline=NOW + timedelta(hours=h, minutes=m, microseconds=rng.randint(0, 10)),
                          sla_resolution_deadline=NOW + timedelta(hours=h + 5, minutes=m))
            for h in hours for m in (0, 17, 59)]


def test_figures_from_the_mark_on_read_the_deadlines_ahead_and_before_it_the_buckets(pg_engine):
    tenant = uuid.uuid4()
    add_tickets(pg_engine, deadlines_around(tenant, range(-30, 30, 2)))
    assert mark_is(pg_engine, tenant, "-infinity")  # a new tenant: every pending deadline is ahead of it
    figures: list[str] = []

    def record(conn, cursor, statement, *_args):
        if "created_today" in statement:
            figures.append(statement)

    def read(clock: datetime) -> bool:
        """Exact at ``clock``; whether the figures read the deadlines ahead of the mark."""
        figures.clear()
        assert_summaries_equal_scans(pg_engine, manager(tenant), TicketFilters(), clock, 10)
        return "ticket_summary_ahead" in figures[0]

    event.listen(pg_engine, "before_cursor_execute", record)
    try:
        assert all(read(NOW + timedelta(hours=h)) for h in (-40, -3, 0, 7))
        assert advance_marks(pg_engine, NOW, tenant=tenant) == 1
        assert mark_is(pg_engine, tenant, NOW.replace(minute=0))
        assert advance_marks(pg_engine, NOW - timedelta(hours=5), tenant=tenant) == 0  # never backwards
        assert mark_is(pg_engine, tenant, NOW.replace(minute=0))
        hour = NOW.replace(minute=0)
        for clock in (hour, NOW, hour + timedelta(minutes=59, seconds=59), NOW + timedelta(hours=9, minutes=17)):
            assert read(clock), clock
        for clock in (hour - timedelta(microseconds=1), NOW - timedelta(hours=20)):  # a clock before the mark
            assert not read(clock), clock
        # Moved again, past deadlines that then change: still exact on either side of the mark.
        assert advance_marks(pg_engine, NOW + timedelta(hours=6), tenant=tenant) == 1
        with pg_engine.begin() as conn:
            conn.execute(update(Ticket).where(Ticket.tenant_id == tenant, Ticket.sla_response_deadline
                                              < NOW + timedelta(hours=4)).values(first_responded_at=NOW))
        for clock in (NOW, NOW + timedelta(hours=6), NOW + timedelta(hours=8, minutes=59)):
            read(clock)
    finally:
        event.remove(pg_engine, "before_cursor_execute", record)


def test_an_advance_waits_only_briefly_for_a_tenant_being_written_to_and_moves_it_later(pg_engine):
    tenant = uuid.uuid4()
    add_tickets(pg_engine, deadlines_around(tenant, range(-3, 3)))
    with pg_engine.connect() as writer:
        with writer.begin():  # the trigger holds the tenant's mark FOR SHARE until this commits
            writer.execute(update(Ticket).where(Ticket.tenant_id == tenant, Ticket.sla_response_deadline < NOW)
                           .values(sla_response_deadline=NOW + timedelta(minutes=30)))
            started = time.monotonic()
            assert advance_marks(pg_engine, NOW, tenant=tenant) == 0
            assert time.monotonic() - started < 1.5
            assert mark_is(pg_engine, tenant, "-infinity")
    assert advance_marks(pg_engine, NOW, tenant=tenant) == 1
    for clock in (NOW, NOW + timedelta(minutes=31)):
        assert_summaries_equal_scans(pg_engine, manager(tenant), TicketFilters(), clock, 10)


def test_a_writer_waits_for_an_advance_in_progress_and_counts_against_the_new_mark(pg_engine):
    """The race the marks' lock closes: a deadline in [old mark, new mark) written while the mark moves."""
    tenant = uuid.uuid4()
    add_tickets(pg_engine, deadlines_around(tenant, range(-6, 6)))
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with pg_engine.begin() as conn:  # a deadline the advance passes over: counted then not ahead
                conn.execute(insert(Ticket), [ticket_record(tenant, created_at=NOW - timedelta(hours=9),
                                                            sla_response_deadline=NOW - timedelta(hours=2))])
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        done.set()

    with pg_engine.connect().execution_options(isolation_level="READ COMMITTED") as advancer:
        with advancer.begin():
            moved = advancer.execute(text("SELECT opsdash_summary_advance(:now, :t)"), {"now": NOW, "t": tenant})
            assert moved.scalar_one() == 1
            thread = threading.Thread(target=write)
            thread.start()
            assert not done.wait(0.7), "the writer did not wait for the advance"
    thread.join(10)
    assert done.is_set() and not errors, errors
    for clock in (NOW, NOW - timedelta(hours=1), NOW + timedelta(hours=3, minutes=1)):
        assert_summaries_equal_scans(pg_engine, manager(tenant), TicketFilters(), clock, 10)


def test_a_repeatable_read_writer_whose_snapshot_predates_a_moved_mark_fails_rather_than_miscounts(pg_engine):
    tenant = uuid.uuid4()
    add_tickets(pg_engine, deadlines_around(tenant, range(-3, 3)))
    with pg_engine.connect().execution_options(isolation_level="REPEATABLE READ") as writer:
        with pytest.raises(DBAPIError) as failed:
            with writer.begin():
                writer.execute(text("SELECT 1"))  # its snapshot, before the move
                assert advance_marks(pg_engine, NOW, tenant=tenant) == 1
                writer.execute(update(Ticket).where(Ticket.tenant_id == tenant)
                               .values(sla_response_deadline=NOW - timedelta(hours=1, minutes=5)))
        assert failed.value.orig.sqlstate == "40001"  # serialization failure: the writer retries
    assert_summaries_equal_scans(pg_engine, manager(tenant), TicketFilters(), NOW, 10)
    with pg_engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        with pytest.raises(DBAPIError, match="READ COMMITTED"):  # the advance needs fresh snapshots
            conn.execute(text("SELECT opsdash_summary_advance(now())"))


def test_writers_at_once_while_the_marks_move_leave_the_figures_exact(pg_engine, random_seed):
    """Four connections change deadlines and answers of one tenant's cells while another moves its
    mark hour by hour across those deadlines; then every figure equals the scan."""
    tenant = uuid.uuid4()
    rng = random.Random(random_seed)
    start = deadlines_around(tenant, range(-10, 10), rng)
    add_tickets(pg_engine, start)
    ids = [r["id"] for r in start]
    errors: list[BaseException] = []
    deadlocks: list[BaseException] = []
    writing = threading.Event()

    def writer(seed: int) -> None:
        own = random.Random(seed)
        try:
            for _ in range(60):
                try:
                    write(own)
                except DBAPIError as exc:  # two statements may deadlock with another's two: retried by a writer
                    if exc.orig.sqlstate != "40P01":
                        raise
                    deadlocks.append(exc)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    def write(own: random.Random) -> None:
        with pg_engine.begin() as conn:
            for _ in range(own.choice((1, 1, 2))):  # some transactions of two statements
                choice = own.random()
                due = NOW + timedelta(minutes=own.randint(-720, 720), seconds=own.randint(0, 59))
                if choice < 0.4:
                    conn.execute(text("UPDATE tickets SET sla_response_deadline = :d, first_responded_at = "
                                      "NULL WHERE id = :id"), {"d": due, "id": own.choice(ids)})
                elif choice < 0.6:
                    conn.execute(text("UPDATE tickets SET first_responded_at = :r, status = :s WHERE id = :id"),
                                 {"r": None if own.random() < 0.5 else NOW, "s": own.choice(STATUSES),
                                  "id": own.choice(ids)})
                elif choice < 0.8:
                    conn.execute(insert(Ticket), [ticket_record(
                        tenant, ward_id=own.choice(WARDS[:2]), created_at=NOW - timedelta(days=1),
                        sla_response_deadline=due, sla_resolution_deadline=due + timedelta(hours=1))])
                else:
                    conn.execute(text("UPDATE tickets SET ward_id = :w, is_sensitive = :f, "
                                      "sla_resolution_deadline = :d WHERE id = :id"),
                                 {"w": own.choice(WARDS), "f": own.random() < 0.2, "d": due,
                                  "id": own.choice(ids)})

    def advancer() -> None:
        clock, moved = NOW - timedelta(hours=11), 0
        try:
            while writing.is_set() and clock < NOW + timedelta(hours=11):
                moved += advance_marks(pg_engine, clock, tenant=tenant)
                clock += timedelta(minutes=rng.randint(5, 40))
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)
        moves.append(moved)

    moves: list[int] = []
    writing.set()
    threads = [threading.Thread(target=writer, args=(rng.randrange(10**9),)) for _ in range(4)]
    mover = threading.Thread(target=advancer)
    for thread in [*threads, mover]:
        thread.start()
    for thread in threads:
        thread.join()
    writing.clear()
    mover.join()
    assert not errors, errors
    assert moves and moves[0] > 0, "the mark never moved while writers ran"
    with pg_engine.connect() as conn:
        mark = conn.execute(text("SELECT as_of FROM ticket_summary_marks WHERE tenant_id = :t"),
                            {"t": tenant}).scalar_one()
    clocks = [mark, mark - timedelta(microseconds=1), mark + timedelta(minutes=rng.randint(0, 600)),
              NOW + timedelta(minutes=rng.randint(-700, 700)), NOW + timedelta(hours=12)]
    for clock in clocks:
        assert_summaries_equal_scans(pg_engine, manager(tenant), TicketFilters(), clock, 15)
    assert advance_marks(pg_engine, NOW + timedelta(hours=12), tenant=tenant) == 1
    for clock in clocks:
        assert_summaries_equal_scans(pg_engine, manager(tenant), TicketFilters(), clock, 15)
    assert_total_and_median(pg_engine, manager(tenant), TicketFilters())


def test_migration_0013_counts_the_deadlines_ahead_of_existing_tickets_and_its_downgrade_drops_them():
    with empty_pg_database() as url:
        engine = make_engine(url)
        try:
            migrate(engine, "0012")
            result = seeding.seed(engine, tickets=2000, wards=4, municipalities=2, random_seed=12)
            scope = scope_of(engine, result, "manager")
            with engine.begin() as conn:  # pending deadlines across the next hours, by the old triggers
                conn.execute(text("UPDATE tickets SET first_responded_at = NULL, sla_response_deadline = "
                                  "now() + (abs(hashtext(id::text)) % 1800) * interval '1 minute' "
                                  "- interval '5 hours' WHERE abs(hashtext(id::text)) % 10 < 3"))
            migrate(engine)
        finally:
            engine.dispose()
        engine = make_engine(url)  # a process started after the upgrade
        try:
            assert marks_at_the_current_hour(engine)
            now = datetime.now(timezone.utc)
            for clock in (now, now + timedelta(hours=3, minutes=7), now - timedelta(hours=2)):
                assert_summaries_equal_scans(engine, scope, TicketFilters(), clock, 30)
            config = _alembic_config(engine)
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.downgrade(config, "0012")
        finally:
            engine.dispose()
        engine = make_engine(url)  # a process started after the downgrade: the buckets again
        try:
            with engine.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM pg_class WHERE relname IN "
                                         "('ticket_summary_marks', 'ticket_summary_ahead')")).scalar_one()
            assert left == 0
            add_tickets(engine, [ticket_record(scope.municipality_id, ward_id=result.municipalities[0]["wards"][0],
                                               sla_response_deadline=datetime.now(timezone.utc) + timedelta(hours=2))])
            assert_summaries_equal_scans(engine, scope, TicketFilters(), datetime.now(timezone.utc), 30)
            migrate(engine)
        finally:
            engine.dispose()
        engine = make_engine(url)
        try:
            assert_summaries_equal_scans(engine, scope, TicketFilters(), datetime.now(timezone.utc), 30)
        finally:
            engine.dispose()
