"""The Scope gate, on SQLite and PostgreSQL: every rule tried against real rows."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from data import NotAuthorized, TicketFilters, count_tickets, counts_by, scoped_tickets, ticket_kpis
from data.models import Ticket
from data.scope import Scope
from data.named_tickets import ticket_visibility
from data.tickets import iter_ticket_chunks, ticket_page

from .helpers.databases import add_tickets, scope_of, ticket_record


def all_rows(engine, muni_id: str) -> list[Ticket]:
    """Every ticket of a municipality, read around the gate (test oracle)."""
    with Session(engine) as session:
        return list(session.execute(select(Ticket).where(Ticket.tenant_id == uuid.UUID(muni_id))).scalars())


def test_manager_sees_exactly_the_non_sensitive_tickets_of_their_municipality(engine, make_seed):
    result = make_seed(tickets=600, random_seed=11)
    scope = scope_of(engine, result, "manager")
    frame = scoped_tickets(engine, scope)
    with engine.connect() as conn:
        expected = set(conn.execute(
            select(Ticket.tracking_number).where(
                Ticket.tenant_id == scope.municipality_id, Ticket.is_sensitive.is_(False), Ticket.category != "gbv"
            )
        ).scalars())
    assert set(frame["tracking_number"]) == expected
    assert len(frame) == count_tickets(engine, scope) > 0


def test_sensitive_tickets_never_appear_by_flag_or_by_category(engine, make_seed):
    result = make_seed(tickets=800, random_seed=12, sensitive_share=0.3)
    scope = scope_of(engine, result, "admin")
    sensitive_ids = {
        str(row.id) for row in all_rows(engine, result.municipalities[0]["id"])
        if row.is_sensitive or row.category.lower() == "gbv"
    }
    assert sensitive_ids, "the seed should have made sensitive tickets"
    frame = scoped_tickets(engine, scope)
    assert not sensitive_ids & set(frame["id"])
    assert "gbv" not in set(frame["category"].str.lower())
    assert "gbv" not in counts_by(engine, scope, "category").index
    assert ticket_kpis(engine, scope).total == len(frame)


def test_gbv_category_is_sensitive_in_any_case(engine, make_seed):
    result = make_seed(tickets=50, random_seed=13)
    scope = scope_of(engine, result, "manager")
    before = count_tickets(engine, scope)
    with engine.begin() as conn:
        for category in ("GBV", "Gbv", "gbv"):
            conn.execute(Ticket.__table__.insert().values(
                id=uuid.uuid4(), tenant_id=scope.municipality_id, ward_id=result.municipalities[0]["wards"][0],
                tracking_number=f"X-{uuid.uuid4().hex[:10]}", category=category, status="open", severity="low",
                description="sensitive", language="en", is_sensitive=False,
                created_at=datetime.now(timezone.utc),
            ))
    assert count_tickets(engine, scope) == before


def test_councillor_never_sees_other_ward_even_with_forged_filter(engine, make_seed):
    result = make_seed(tickets=600, random_seed=14)
    councillor = scope_of(engine, result, "ward_councillor", ward_index=1)
    other_wards = [w for w in result.municipalities[0]["wards"] if w != councillor.ward_id]
    own = scoped_tickets(engine, councillor)
    assert len(own) > 0 and set(own["ward_id"]) == {councillor.ward_id}
    forged = scoped_tickets(engine, councillor, TicketFilters(wards=other_wards))
    assert set(forged["ward_id"]) <= {councillor.ward_id}
    assert len(forged) == len(own)
    assert count_tickets(engine, councillor, TicketFilters(wards=other_wards)) == len(own)
    assert set(counts_by(engine, councillor, "ward_id").index) == {councillor.ward_id}


def test_councillor_never_sees_tickets_without_a_ward(engine, make_seed):
    result = make_seed(tickets=1500, random_seed=15)
    councillor = scope_of(engine, result, "ward_councillor")
    frame = scoped_tickets(engine, councillor)
    assert frame["ward_id"].notna().all()


def test_no_role_ever_sees_another_municipality(engine, make_seed):
    result = make_seed(tickets=400, random_seed=16)
    other_id = result.municipalities[1]["id"]
    for role in ("admin", "manager", "ward_councillor"):
        scope = scope_of(engine, result, role, municipality=0)
        other_numbers = {r.tracking_number for r in all_rows(engine, other_id)}
        seen = set(scoped_tickets(engine, scope)["tracking_number"])
        assert not seen & other_numbers
        # A ward filter naming the other municipality's wards yields nothing new.
        forged = TicketFilters(wards=result.municipalities[1]["wards"])
        assert not set(scoped_tickets(engine, scope, forged)["tracking_number"]) & other_numbers


@pytest.mark.parametrize("role", ["field_worker", "citizen"])
def test_roles_without_dashboard_are_refused(engine, make_seed, role):
    result = make_seed(tickets=10, random_seed=17)
    with pytest.raises(NotAuthorized, match="no access"):
        scope_of(engine, result, role)


def test_scope_cannot_be_built_for_a_councillor_without_ward_or_an_unknown_role():
    with pytest.raises(NotAuthorized):
        Scope(municipality_id=uuid.uuid4(), role="ward_councillor", ward_id=None)
    for blank in ("", "  ", "\u00a0", "\u200b", "\t\ufeff"):  # blank to a reader is no ward
        with pytest.raises(NotAuthorized):
            Scope(municipality_id=uuid.uuid4(), role="ward_councillor", ward_id=blank)
    with pytest.raises(NotAuthorized):
        Scope(municipality_id=uuid.uuid4(), role="superuser")
    manager = Scope(municipality_id=uuid.uuid4(), role="manager", ward_id="W1")
    assert manager.ward_id is None  # whole-municipality roles are never narrowed


def test_unknown_user_is_not_authorized(engine):
    from data import scope_for_user

    with pytest.raises(NotAuthorized, match="unknown user"):
        scope_for_user(engine, "nobody-" + uuid.uuid4().hex)


def test_reads_refuse_anything_but_a_scope(engine):
    forged = {"municipality_id": str(uuid.uuid4()), "role": "admin"}
    with pytest.raises(TypeError):
        scoped_tickets(engine, forged)  # type: ignore[arg-type]


def test_pages_and_chunks_cover_the_same_rows_as_the_frame(engine, make_seed):
    result = make_seed(tickets=700, random_seed=18)
    scope = scope_of(engine, result, "manager")
    frame = scoped_tickets(engine, scope)
    page_rows: list[str] = []
    page = 1
    while True:
        p = ticket_page(engine, scope, page=page, page_size=97)
        page_rows += list(p.frame["id"])
        if page >= p.page_count:
            break
        page += 1
    assert page_rows == list(frame["id"])
    chunk_rows = [i for chunk in iter_ticket_chunks(engine, scope, chunk_size=50) for i in chunk["id"]]
    assert chunk_rows == list(frame["id"])


def test_a_page_takes_its_total_as_a_number_or_from_a_function_called_after_its_rows(engine, make_seed):
    """The dashboard's table passes a function (the figures other views load meanwhile): the rows'
    query must not wait for it, and the page must carry what it returns."""
    from sqlalchemy import event

    result = make_seed(tickets=120, random_seed=21)
    scope = scope_of(engine, result, "manager")
    counted = ticket_page(engine, scope, page=2, page_size=25)
    steps: list[str] = []

    def statement(*_args):
        steps.append("query")

    def total() -> int:
        steps.append("total")
        return counted.total

    event.listen(engine, "before_cursor_execute", statement)
    try:
        given = ticket_page(engine, scope, page=2, page_size=25, total=total)
    finally:
        event.remove(engine, "before_cursor_execute", statement)
    assert steps == ["query", "total"]  # one query (the rows, no COUNT), then the total
    assert given.total == counted.total == len(scoped_tickets(engine, scope))
    assert list(given.frame["id"]) == list(counted.frame["id"])
    assert ticket_page(engine, scope, page=2, page_size=25, total=7).page_count == 1


def test_ticket_visibility_reports_sensitive_tickets(engine, make_seed):
    result = make_seed(tickets=300, random_seed=19, sensitive_share=0.5)
    rows = all_rows(engine, result.municipalities[0]["id"])
    sensitive = next(r for r in rows if r.is_sensitive or r.category == "gbv")
    visible = next(r for r in rows if not r.is_sensitive and r.category != "gbv")
    assert ticket_visibility(engine, sensitive.id) == "sensitive"
    assert ticket_visibility(engine, str(visible.id)) == "visible"
    assert ticket_visibility(engine, uuid.uuid4()) == "missing"
    assert ticket_visibility(engine, "not-a-uuid") == "missing"


def test_median_first_response_counts_only_visible_answered_tickets_whichever_way_it_is_read(engine):
    """A whole municipality's median (an index walk on PostgreSQL) and a filtered or ward one (a sort)
    never count sensitive tickets, another municipality's or unanswered ones, odd or even in number."""
    from datetime import timedelta

    from data.aggregates import median_first_response_s

    tenant, other = uuid.uuid4(), uuid.uuid4()
    created = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)

    def answered(tenant_id, seconds: float, **values) -> dict:
        return ticket_record(tenant_id, created_at=created, first_responded_at=created + timedelta(seconds=seconds),
                             **values)

    add_tickets(engine, [
        *(answered(tenant, s) for s in (40, 10, 30, 20)),
        answered(tenant, 1, is_sensitive=True), answered(tenant, 2, category="GBV"), answered(tenant, 3, category="gbv"),
        *(answered(other, 5) for _ in range(6)),
        ticket_record(tenant, created_at=created, first_responded_at=None),  # not answered
        answered(tenant, 7, ward_id="W2"),  # another ward: the councillor of W1 leaves it out
    ])
    manager = Scope(municipality_id=tenant, role="manager")
    councillor = Scope(municipality_id=tenant, role="ward_councillor", ward_id="W1")
    everything = TicketFilters(statuses=("open",))  # keeps every row above, but is a filter: the sorted way

    def medians(scope: Scope) -> list[float | None]:  # unfiltered and filtered (SQLite's julianday: ~0.1 ms off)
        return [pytest.approx(median_first_response_s(engine, scope, f), abs=0.01) for f in (None, everything)]

    assert medians(manager) == [20.0, 20.0]
    assert medians(councillor) == [25.0, 25.0]
    add_tickets(engine, [answered(tenant, 50, ward_id="W3")])
    assert medians(manager) == [25.0, 25.0]
    assert median_first_response_s(engine, Scope(municipality_id=uuid.uuid4(), role="manager")) is None


def test_a_whole_municipalitys_figures_equal_those_of_a_filter_that_keeps_every_ticket(engine, make_seed):
    """Two scans over one snapshot (PostgreSQL, no filter) or one grouping-sets scan (a filter, or
    asked for): the same counts, trend and total, sensitive tickets in none."""
    from data.aggregates import ticket_figures
    from data.models import Status

    result = make_seed(tickets=400, random_seed=23)
    scope = scope_of(engine, result, "manager")
    now = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    dims = ("category", "status", "ward_id")
    whole = ticket_figures(engine, scope, None, dims, days=14, now=now)
    one_scan = ticket_figures(engine, scope, None, dims, days=14, now=now, side_by_side=False)
    every_status = TicketFilters(statuses=tuple(s.value for s in Status))
    filtered = ticket_figures(engine, scope, every_status, dims, days=14, now=now)

    def cells(figures):
        return sorted(map(tuple, figures.breakdown.astype(object).itertuples(index=False)), key=repr)

    assert cells(whole) == cells(one_scan) == cells(filtered)
    assert whole.by_day.equals(one_scan.by_day) and whole.by_day.equals(filtered.by_day)
    assert int(whole.breakdown["tickets"].sum()) == count_tickets(engine, scope) > 0
    assert "gbv" not in {str(c).lower() for c in whole.breakdown["category"]}


def test_a_ticket_written_while_the_figures_load_is_in_neither_of_their_two_queries(pg_engine):
    """The counts and the trend run on two connections; the second imports the first one's snapshot.
    A ticket committed after that snapshot was taken, before either query ran, must be missing from
    both (and then appear in both), or the KPI total and the backlog chart would disagree."""
    from datetime import timedelta

    from sqlalchemy import event

    from data.aggregates import ticket_figures

    engine, tenant = pg_engine, uuid.uuid4()
    now = datetime.now(timezone.utc)
    add_tickets(engine, [ticket_record(tenant, created_at=now - timedelta(hours=h)) for h in (1, 2, 30)])
    # In UTC while the tenant's local days are counted in the default zone: the summary tables
    # (migration 0009) cannot answer, so the two scans run (tests/test_summaries.py: their snapshot).
    scope = Scope(municipality_id=tenant, role="manager", timezone="UTC")
    dims = ("category", "status", "ward_id")
    written: list[str] = []

    def write_after_the_snapshot(conn, cursor, statement, *_args):
        if "pg_export_snapshot" in statement and not written:
            add_tickets(engine, [ticket_record(tenant, created_at=now - timedelta(minutes=5))])  # its own connection
            written.append(statement)

    def figures():
        result = ticket_figures(engine, scope, None, dims, days=7, now=now)
        return int(result.breakdown["tickets"].sum()), int(result.by_day["created"].sum())

    event.listen(engine, "after_cursor_execute", write_after_the_snapshot)
    try:
        during = figures()
    finally:
        event.remove(engine, "after_cursor_execute", write_after_the_snapshot)
    assert written, "the figures no longer share an exported snapshot"
    assert during == (3, 3)
    assert figures() == (4, 4)
