"""Dashboard components without a browser, on SQLite and PostgreSQL.

Expected values come from independent computations on the scoped pandas
frame (``scoped_tickets``) or from the raw rows, never from the function
the component itself calls.
"""
from __future__ import annotations

import contextlib
import threading
import time
import uuid
from concurrent import futures
from datetime import date, datetime, timedelta, timezone
from itertools import accumulate
from urllib.parse import parse_qsl

import pandas as pd
import panel as pn
import pytest
from panel.io.location import Location

from components.charts import TicketCharts
from components.filters import FilterBar
from components.kpis import KpiCards, format_duration, matching_text
from components.store import BREAKDOWN_DIMS, DEFAULT_PAGE_SIZE, TREND_DAYS, UNAVAILABLE, DashboardStore
from components.table import TABLE_COLUMNS, UNTRUSTED_COLUMNS, TicketTable, sort_spec
from components.unfold import UnfoldCard
from dashboard_app.dashboard import Dashboard
from data.db import make_engine
from data.errors import InvalidFilter, NotAuthorized
from data.filters import TicketFilters
from data.models import OPEN_STATUSES
from data.scope import Scope
from data.aggregates import ticket_figures
from data.models import Ticket
from data.tickets import count_tickets, page_rows, scoped_tickets

from .helpers.databases import scope_of, user_of
from .helpers.dashboard import XSS_DESCRIPTION, add_ticket, kpi_cards, other_ward, rendered_texts


def store_for(engine, result, role: str, **kwargs) -> DashboardStore:
    """A store that always queries (tests change rows and compare)."""
    return DashboardStore(scope=scope_of(engine, result, role, **kwargs), engine=engine, cache_ttl_s=0)


# -- the store: the one place filters are written ------------------------------------
def test_councillor_store_drops_every_spelling_of_a_ward_filter(engine, make_seed):
    result = make_seed(tickets=50, random_seed=21)
    store = store_for(engine, result, "ward_councillor")
    forged = other_ward(result, store.scope)
    for key in ("ward", "wards", "ward_id"):
        store.set_filters(**{key: forged, "status": "open"})
        assert store.filters.wards == ()
        assert store.filters.statuses == ("open",)
    constructed = DashboardStore(scope=store.scope, engine=engine, filters=TicketFilters(wards=(forged,)))
    assert constructed.filters.wards == ()


def test_store_scope_cannot_be_replaced_after_construction(engine, make_seed):
    result = make_seed(tickets=10, random_seed=22)
    store = store_for(engine, result, "ward_councillor")
    manager = scope_of(engine, result, "manager")
    with pytest.raises(TypeError):
        store.scope = manager
    assert store.scope.is_councillor


def test_store_refuses_to_exist_without_a_server_built_scope(engine):
    with pytest.raises(TypeError):
        DashboardStore(engine=engine)
    with pytest.raises((TypeError, ValueError)):
        DashboardStore(scope={"municipality_id": "x", "role": "admin"}, engine=engine)


def test_invalid_filter_leaves_the_previous_filters_in_place(engine, make_seed):
    store = store_for(engine, make_seed(tickets=10, random_seed=23), "manager")
    store.set_filters(status="open")
    with pytest.raises(InvalidFilter):
        store.set_filters(status="open", **{"from": "2026-05-02", "to": "2026-05-01"})
    with pytest.raises(InvalidFilter):
        store.set_filters(nonsense="1")
    assert store.filters == TicketFilters(statuses=("open",))


# -- filter bar -> store ---------------------------------------------------------------
def test_filter_widgets_write_the_store_and_every_view_shows_the_same_set(engine, make_seed):
    result = make_seed(tickets=300, random_seed=24)
    store = store_for(engine, result, "manager")
    bar, table, kpis = FilterBar(store=store), TicketTable(store=store), KpiCards(store=store)
    ward = result.municipalities[0]["wards"][1]
    bar.status.value = ["open", "in_progress"]
    bar.ward.value = [ward]
    assert store.filters == TicketFilters(statuses=("open", "in_progress"), wards=(ward,))
    frame = scoped_tickets(engine, store.scope)
    expected = frame[frame.status.isin(["open", "in_progress"]) & (frame.ward_id == ward)]
    assert table.tabulator.total_rows == len(expected)
    assert kpi_cards(kpis.render(kpis.load()))["Open tickets"] == f"{len(expected):,}"
    bar.clear.clicks += 1
    assert store.filters.is_empty() and bar.status.value == [] and bar.ward.value == []


def test_bad_filter_input_is_refused_and_keeps_the_store(engine, make_seed):
    store = store_for(engine, make_seed(tickets=10, random_seed=25), "manager")
    bar = FilterBar(store=store)
    bar.search.value = "pipe"
    before = store.filters
    # Longer than the parameter accepts (the widget's max_length is the browser's: only a forged
    # message sends this): refused, and the widget shows the state's value again.
    with pytest.raises(ValueError, match="too long"):
        bar.search.value = "x" * 300
    assert store.filters == before and bar.search.value == "pipe" and bar.message == ""
    bar.search.value = "leak"
    assert bar.message == "" and store.filters.search == "leak"


def test_councillor_never_sees_other_ward_even_with_forged_widget_value(engine, make_seed):
    result = make_seed(tickets=400, random_seed=26)
    store = store_for(engine, result, "ward_councillor")
    bar, table, kpis = FilterBar(store=store), TicketTable(store=store), KpiCards(store=store)
    assert not isinstance(bar.ward, pn.widgets.Widget)  # their ward is said, with no input a message could set
    forged = other_ward(result, store.scope)
    with pytest.raises((TypeError, ValueError)):
        store.state.wards = [forged]  # the state refuses it too
    bar.status.value = ["open"]
    assert store.filters.wards == () and store.filters.statuses == ("open",)
    own = scoped_tickets(engine, scope_of(engine, result, "manager"))
    own = own[(own.ward_id == store.scope.ward_id) & (own.status == "open")]
    assert table.tabulator.total_rows == len(own)
    assert set(table.tabulator.value.ward_id) <= {store.scope.ward_id}
    cards = kpi_cards(kpis.render(kpis.load()))
    assert cards["Open tickets"] == f"{len(own):,}"
    assert store.state.wards == [store.scope.ward_id] and store.scope.ward_id in bar.ward.object


# -- KPIs --------------------------------------------------------------------------------
def test_kpi_cards_equal_figures_computed_from_the_scoped_rows(engine, make_seed):
    result = make_seed(tickets=300, random_seed=27)
    store = store_for(engine, result, "manager")
    now = pd.Timestamp.now(tz="UTC")
    kpis = KpiCards(store=store, now=now.to_pydatetime())
    frame = scoped_tickets(engine, store.scope)
    cards = kpi_cards(kpis.render(kpis.load()))
    today = now.tz_convert(store.scope.timezone).normalize()
    resolved = frame.status.isin(["resolved", "closed"]).sum()
    responded = frame.dropna(subset=["first_responded_at"])
    median_s = (responded.first_responded_at - responded.created_at).dt.total_seconds().median()
    assert cards["Open tickets"] == f"{frame.status.isin(OPEN_STATUSES).sum():,}"
    assert cards["Created today"] == f"{(frame.created_at >= today).sum():,}"
    assert cards["Resolution rate"] == f"{resolved / len(frame):.0%}"
    assert cards["Median first response"] == format_duration(median_s)
    # The SLA cards count resolved tickets too, and their titles say so.
    deadline, answered = frame.sla_resolution_deadline, frame.resolved_at
    late = deadline.notna() & ((answered.isna() & (deadline < now)) | (answered > deadline))
    assert late[frame.status.isin(["resolved", "closed"])].any()  # the seed has some, or this proves nothing
    assert cards["Resolution SLA missed (all tickets, resolved too)"] == f"{late.sum():,}"
    assert "Response SLA missed (all tickets, resolved too)" in cards
    assert rendered_texts(kpis.render(kpis.load()), "opsdash-kpi-total") == [f"{len(frame):,} tickets match the filters"]
    assert matching_text(1) == "1 ticket matches the filters"


def test_sensitive_tickets_count_nowhere_in_the_dashboard(engine, make_seed):
    result = make_seed(tickets=200, random_seed=28)
    store = store_for(engine, result, "manager")
    ward = result.municipalities[0]["wards"][0]
    table, kpis, charts = TicketTable(store=store), KpiCards(store=store), TicketCharts(store=store)
    before = (table.tabulator.total_rows, kpi_cards(kpis.render(kpis.load())), charts.load())
    for category, flag in (("GBV", False), ("water", True), ("gbv", True)):
        add_ticket(engine, store.scope.municipality_id, ward, category=category, is_sensitive=flag,
                   description="sensitive report")
    store.refresh()
    after = charts.load()
    assert table.tabulator.total_rows == before[0]
    assert kpi_cards(kpis.render(kpis.load())) == before[1]
    assert after.by_category_status.equals(before[2].by_category_status)
    assert "sensitive report" not in set(table.tabulator.value.description)


# -- charts --------------------------------------------------------------------------------
def test_charts_agree_with_the_rows_and_only_managers_get_the_ward_comparison(engine, make_seed):
    result = make_seed(tickets=300, random_seed=29)
    manager, councillor = store_for(engine, result, "manager"), store_for(engine, result, "ward_councillor")
    manager.set_filters(category="water")
    data = TicketCharts(store=manager).load()
    frame = scoped_tickets(engine, manager.scope, manager.filters)
    assert data.by_category_status.tickets.sum() == len(frame)
    assert data.by_ward_status.groupby("ward_id", dropna=False).tickets.sum().sum() == len(frame)
    assert TicketCharts(store=councillor).load().by_ward_status is None
    assert isinstance(TicketCharts(store=manager).render(data), pn.viewable.Viewable)


def segment_sum(bars: dict, status: str) -> int:
    """Tickets of ``status`` over every stack of a stacked bar chart's data."""
    return sum(n for s, n in zip(bars["status"], bars["tickets"]) if s == status.replace("_", " "))


def test_filter_changes_update_the_figures_on_the_page_in_place_with_the_right_numbers(engine, make_seed):
    result = make_seed(tickets=300, random_seed=45)
    store = store_for(engine, result, "manager")
    kpis, charts = KpiCards(store=store), TicketCharts(store=store)
    kpi_view, chart_view = kpis.__panel__(), charts.__panel__()  # the first load renders

    def figures():
        return [o for o in chart_view.select() if type(o).__name__ == "Bokeh"]

    first_figures, first_cards = figures(), kpi_cards(kpi_view)
    assert len(first_figures) == 3 and first_cards["Open tickets"] != "0"
    for category in ("water", "roads"):
        store.set_filters(category=category)
        frame = scoped_tickets(engine, store.scope, store.filters)
        # Same Bokeh figures, new numbers: the bars sum to the filtered rows per status.
        assert [f.object for f in figures()] == [f.object for f in first_figures]
        bars = first_figures[0].object.renderers[0].data_source.data
        for status in ("open", "in_progress", "resolved"):
            assert segment_sum(bars, status) == (frame.status == status).sum(), (category, status)
        assert set(bars["category"]) == {category}
        assert bars["top"] == list(accumulate(bars["tickets"]))  # one stack: segments on top of each other
        # The axes follow the numbers (set on the server): the tallest bar and line fit, with little room to spare.
        for figure in (f.object for f in first_figures):
            data = figure.renderers[0].data_source.data
            if "day" in data:  # lines: the highest point
                tallest = max(max(data[c]) for c in ("created", "resolved", "backlog"))
            else:  # stacked bars: the tallest stack
                tallest = max(data["top"])
            assert figure.y_range.start == 0 and tallest <= figure.y_range.end <= max(tallest, 1) * 1.1
        assert kpi_cards(kpi_view)["Open tickets"] == f"{frame.status.isin(OPEN_STATUSES).sum():,}"
        assert rendered_texts(kpi_view, "opsdash-kpi-total") == [matching_text(len(frame))]
    # A filter that matches nothing leaves the bar charts out (the table says why); clearing it draws them again.
    store.set_filters(q="no ticket says this 7f3a")
    assert len(figures()) == 1 and "No tickets match the filters." not in rendered_texts(chart_view, "opsdash-notice")
    store.set_filters()
    assert len(figures()) == 3 and sum(figures()[0].object.renderers[0].data_source.data["tickets"]) == len(
        scoped_tickets(engine, store.scope))


def test_no_matching_tickets_shows_empty_states_not_errors(engine, make_seed):
    store = store_for(engine, make_seed(tickets=50, random_seed=30), "manager")
    store.set_filters(q="no ticket says this 7f3a")
    table, charts = TicketTable(store=store), TicketCharts(store=store)
    assert table.tabulator.total_rows == 0 and table.message == "No tickets match the filters."
    view = charts.render(charts.load())
    # Said once on the page (by the table): the empty bar charts are left out, not three notices.
    assert "No tickets match the filters." not in rendered_texts(view, "opsdash-notice")
    assert len(charts._drawn) == 1 and "day" in charts._drawn


# -- the ticket table: paged and sorted in SQL --------------------------------------------
def test_table_pages_and_sorts_in_the_database(engine, make_seed):
    result = make_seed(tickets=300, random_seed=31)
    store = store_for(engine, result, "manager")
    table = TicketTable(store=store, page_size=20)
    frame = scoped_tickets(engine, store.scope).sort_values(["tracking_number", "id"]).reset_index(drop=True)
    assert len(table.tabulator.value) == 20 and table.tabulator.total_rows == len(frame)
    table.tabulator.sorters = [{"field": "tracking_number", "dir": "asc"}]
    table.tabulator.page = 3
    assert list(table.tabulator.value.tracking_number) == list(frame.tracking_number[40:60])
    assert table.tabulator.param.page.bounds == (1, -(-len(frame) // 20))
    store.set_filters(status="open")  # new filters: back to page 1
    assert table.tabulator.page == 1
    assert table.tabulator.total_rows == (frame.status == "open").sum()


def test_severity_sorts_from_low_to_critical_not_alphabetically(engine, make_seed):
    store = store_for(engine, make_seed(tickets=120, random_seed=34), "manager")
    table = TicketTable(store=store, page_size=200)
    order = ["low", "medium", "high", "critical"]  # written here, not read from the code
    table.tabulator.sorters = [{"field": "severity", "dir": "asc"}]
    shown = list(table.tabulator.value.severity)
    assert set(shown) == set(order) and shown == sorted(shown, key=order.index)
    table.tabulator.sorters = [{"field": "severity", "dir": "desc"}]
    shown = list(table.tabulator.value.severity)
    assert shown[0] == "critical" and shown == sorted(shown, key=order.index, reverse=True)


def test_table_ignores_forged_sorters_instead_of_trusting_them(engine, make_seed):
    store = store_for(engine, make_seed(tickets=40, random_seed=32), "manager")
    table = TicketTable(store=store)
    for forged in ([{"field": "description", "dir": "asc"}], [{"field": "id; DROP TABLE tickets", "dir": "asc"}],
                   [{"field": "created_at", "dir": "sideways"}], [{"nonsense": 1}]):
        assert sort_spec(forged) == [("created_at", "desc")]
        table.tabulator.sorters = forged
        assert table.message == "" and table.tabulator.total_rows > 0


def test_citizen_text_is_never_given_an_html_formatter(engine, make_seed):
    result = make_seed(tickets=10, random_seed=33)
    store = store_for(engine, result, "manager")
    add_ticket(engine, store.scope.municipality_id, result.municipalities[0]["wards"][0],
               description=XSS_DESCRIPTION, address='"><script>window.__xss=2</script>')
    table = TicketTable(store=store)
    assert table.tabulator.value.description.iloc[0] == XSS_DESCRIPTION  # newest first, literal
    for column in UNTRUSTED_COLUMNS:
        assert table.tabulator.formatters[column] == {"type": "plaintext"}
    assert not any("html" in str(f).lower() for f in table.tabulator.formatters.values())
    assert set(TABLE_COLUMNS) == set(table.tabulator.value.columns)


def test_table_holds_only_one_page_in_memory(engine, make_seed):
    store = store_for(engine, make_seed(tickets=400, random_seed=34), "manager")
    table = TicketTable(store=store, page_size=25)
    table.tabulator.page = 4
    assert len(table.tabulator.value) == 25 < table.tabulator.total_rows


@contextlib.contextmanager
def searching_while_counted(store: DashboardStore, term: str, until):
    """Another session's count (figures) of ``term`` is running in the shared cache; meanwhile this
    store's filters change to it, in a thread of its own (the views' watchers run there). Yields
    that change's future; ``until()`` is waited for (10 s) before it comes. The count is let
    finish on leaving, and the change then ends."""
    search = TicketFilters(search=term)
    counting, counted = threading.Event(), threading.Event()

    def slow_count():
        counting.set()
        assert counted.wait(30)
        return ticket_figures(store.engine, store.scope, search, BREAKDOWN_DIMS, days=TREND_DAYS)

    other = futures.ThreadPoolExecutor(2)
    try:
        holder = other.submit(store.cached, "figures", (search, TREND_DAYS), slow_count)
        assert counting.wait(10)
        change = other.submit(store.set_filters, search=term)
        deadline = time.monotonic() + 10
        while not until() and time.monotonic() < deadline:
            time.sleep(0.01)
        yield change
        assert not change.done(), "the total was still being counted"
        counted.set()
        change.result(10), holder.result(10)
    finally:
        counted.set()
        other.shutdown()


def test_the_table_shows_a_searchs_rows_while_their_total_is_still_being_counted(engine, make_seed):
    """Issue 20: at 10,000,000 tickets a search's first rows take milliseconds, its count (the
    figures) seconds. The rows show first; the pager offers one page more after a full page
    until the count arrives, then counts every page."""
    store = DashboardStore(scope=scope_of(engine, make_seed(tickets=400, random_seed=39), "manager"),
                           engine=engine)  # results shared: another session's count can be awaited
    table = TicketTable(store=store, page_size=25)
    search = TicketFilters(search="road")
    total = count_tickets(engine, store.scope, search)
    first = list(page_rows(engine, store.scope, search, page=1, page_size=25)["tracking_number"])
    assert 25 < total < table.tabulator.total_rows and list(table.tabulator.value["tracking_number"]) != first
    shown = lambda: list(table.tabulator.value["tracking_number"])  # noqa: E731
    with searching_while_counted(store, "road", until=lambda: shown() == first):
        assert shown() == first, "the rows must not wait for the count"
        assert table.tabulator.total_rows == 26 and table.tabulator.param.page.bounds == (1, 2)
    assert table.tabulator.total_rows == total
    assert table.tabulator.param.page.bounds == (1, -(-total // 25))
    assert list(table.tabulator.value["tracking_number"]) == first


def test_a_page_emptied_by_a_refresh_moves_to_the_last_page_there_is(engine, make_seed):
    store = store_for(engine, make_seed(tickets=130, random_seed=40), "manager")
    table = TicketTable(store=store, page_size=25)
    visible = scoped_tickets(engine, store.scope)
    assert 50 < len(visible) <= 75
    table.tabulator.page = 3
    assert len(table.tabulator.value) == len(visible) - 50
    pages, totals = [], []
    table.tabulator.param.watch(lambda e: pages.append(e.new), "page")
    table.tabulator.param.watch(lambda e: totals.append(e.new), "total_rows")
    with engine.begin() as conn:  # flagged sensitive elsewhere: they leave every view
        conn.execute(Ticket.__table__.update().where(Ticket.id.in_([uuid.UUID(i) for i in visible["id"][:25]]))
                     .values(is_sensitive=True))
    store.refresh()
    left = len(visible) - 25
    # The rows come first and page 3 is empty; the count they have is from before the refresh, so
    # one page back (never page 1, never a walk), then the new count.
    assert pages == [2] and totals[-1] == left and table.tabulator.page == 2
    assert list(table.tabulator.value["tracking_number"]) == list(visible["tracking_number"][50:])
    assert table.message == ""


def test_the_page_the_pager_offered_before_the_count_came_may_be_empty_then_the_last_one_stays(engine, make_seed):
    """Before its count, the pager offers a page after every full one; with exactly 50 matches
    the third is empty: the table stays on the second, and the count then closes the pager there."""
    result = make_seed(tickets=20, random_seed=41)
    store = DashboardStore(scope=scope_of(engine, result, "manager"), engine=engine)
    ward = scoped_tickets(engine, store.scope).ward_id.dropna().iloc[0]
    for n in range(50):
        add_ticket(engine, store.scope.municipality_id, ward, description=f"zebra crossing faded {n}",
                   created_at=datetime.now(timezone.utc) - timedelta(minutes=10 + n))
    table = TicketTable(store=store, page_size=25)
    assert table.tabulator.total_rows > 50  # (so a pager of two pages is the search's, uncounted)
    with searching_while_counted(store, "zebra crossing", until=lambda: table.tabulator.param.page.bounds == (1, 2)):
        table.tabulator.page = 2
        assert table.tabulator.param.page.bounds == (1, 3)  # a full second page: maybe a third
        second = list(table.tabulator.value["tracking_number"])
        table.tabulator.page = 3
        assert table.tabulator.page == 2 and list(table.tabulator.value["tracking_number"]) == second
        assert table.message == ""
    assert table.tabulator.total_rows == 50 and table.tabulator.param.page.bounds == (1, 2)
    assert table.tabulator.page == 2 and list(table.tabulator.value["tracking_number"]) == second


# -- failures: a banner, never a traceback ------------------------------------------------
def test_unreachable_database_sets_the_banner_and_retry_reports_again(engine, make_seed, tmp_path):
    scope = scope_of(engine, make_seed(tickets=10, random_seed=35), "manager")
    down = make_engine(f"sqlite:///{tmp_path}/missing/dir/db.sqlite3")
    store = DashboardStore(scope=scope, engine=down)
    dashboard = Dashboard(store=store)
    assert store.error == UNAVAILABLE
    assert dashboard._banner.visible and dashboard._retry.visible
    assert dashboard.table.message == "The tickets could not be loaded right now."
    data, failed = KpiCards(store=store).load_safely()
    assert data is None and rendered_texts(failed, "opsdash-notice") == ["Not available right now."]
    dashboard._retry.clicks += 1
    assert store.error == UNAVAILABLE and store.data_version == 1


def test_the_banner_goes_by_itself_once_every_failing_view_has_loaded_again(engine, make_seed):
    """Issue 19: a page recovers from a database outage without a reload or a click on Retry."""
    import time

    store = DashboardStore(scope=scope_of(engine, make_seed(tickets=10, random_seed=37), "manager"), engine=engine)
    store.report_unavailable("KpiCards")
    store.report_busy("The ticket database is slow right now.", what="the ticket table")
    assert store.error == "The ticket database is slow right now."
    now, version = time.monotonic(), store.data_version
    assert not store.auto_retry(now) and store.data_version == version  # not at once: a backoff
    assert store.auto_retry(now + 3) and store.data_version == version + 1
    assert not store.auto_retry(now + 4)  # the next try waits longer
    store.view_busy(True)
    assert not store.auto_retry(now + 60)  # never while a view is still loading
    store.view_busy(False)
    store.report_loaded("KpiCards")
    assert store.error  # the table has not loaded yet
    store.report_loaded("the ticket table")
    assert store.error == "" and not store.auto_retry(now + 120)
    # A view that loaded throughout does not clear another's failure.
    store.report_unavailable("TicketCharts")
    store.report_loaded("KpiCards")
    assert store.error == UNAVAILABLE


def test_roles_without_a_dashboard_get_no_dashboard_object(engine, make_seed):
    result = make_seed(tickets=10, random_seed=36)
    for role in ("field_worker", "citizen"):
        with pytest.raises(NotAuthorized):
            Dashboard.for_user(engine, user_of(result, role)["username"])
    with pytest.raises(NotAuthorized):
        Dashboard.for_user(engine, "nobody-by-this-name")


def test_header_names_municipality_user_role_and_councillor_ward(engine, make_seed):
    result = make_seed(tickets=10, random_seed=37)
    councillor = user_of(result, "ward_councillor")
    dashboard = Dashboard.for_user(engine, councillor["username"])
    name = result.municipalities[0]["name"]
    assert dashboard.who() == f"{name} \u00b7 {councillor['username']} \u00b7 ward councillor \u00b7 ward {councillor['ward_id']}"
    assert isinstance(dashboard.template(), pn.template.FastListTemplate)
    assert isinstance(dashboard.__panel__(), pn.Column)


def synced(dashboard: Dashboard, search: str) -> tuple[Location, list[str]]:
    """``dashboard``'s filters synced with Panel's own Location (as served, where the browser is the page)."""
    location, notes = Location(search=search), []
    dashboard.notify = lambda text, kind="warning": notes.append(text)  # no browser to show notifications
    dashboard.sync_url(location)
    return location, notes


def test_old_comma_links_and_panels_json_lists_both_apply_and_the_url_keeps_the_comma_form(engine, make_seed):
    result = make_seed(tickets=50, random_seed=38)
    ward = result.municipalities[0]["wards"][1]
    dashboard = Dashboard(store=store_for(engine, result, "manager"))
    store = dashboard.store
    location, notes = synced(dashboard, f"?utm_source=x&status=open,in_progress&ward={ward}&from=2026-01-01&q=pipe")
    assert store.filters == TicketFilters(statuses=("open", "in_progress"), wards=(ward,),
                                          created_from=date(2026, 1, 1), search="pipe")
    assert dashboard.filter_bar.status.value == ["open", "in_progress"] and notes == []
    # Cleared filters leave the link (Panel's update_query alone would write ``status=``); other keys stay.
    store.state.param.update(statuses=["escalated"], wards=[], search="")
    assert parse_qsl(location.search[1:]) == [("utm_source", "x"), ("status", "escalated"), ("from", "2026-01-01")]
    dashboard.filter_bar.clear.clicks += 1
    assert location.search == "?utm_source=x" and store.filters.is_empty()
    # Panel's default spelling of a list parameter (JSON), and digits parse_query turns into a number.
    other = Dashboard(store=store_for(engine, result, "manager"))
    location, notes = synced(other, '?status=["open","closed"]&q=2026')
    assert other.store.filters == TicketFilters(statuses=("open", "closed"), search="2026") and notes == []
    assert location.search == "?status=open%2Cclosed&q=2026"


def test_a_links_invalid_values_are_reported_and_the_rest_applies(engine, make_seed):
    dashboard = Dashboard(store=store_for(engine, make_seed(tickets=20, random_seed=40), "manager"))
    location, notes = synced(dashboard, "?status=open,bogus&from=2026-02-30&category=water&q=pipe")
    assert dashboard.store.filters == TicketFilters(categories=("water",), search="pipe")
    assert len(notes) == 1 and "status: unknown status 'bogus'" in notes[0] and "from: " in notes[0]
    assert location.search == "?category=water&q=pipe"  # what was applied
    location.search = "?status=open,bogus&from=2026-02-30&category=water&q=pipe"  # the browser reports its link
    assert len(notes) == 1 and location.search == "?category=water&q=pipe"


def test_url_can_never_widen_a_councillor_scope(engine, make_seed):
    result = make_seed(tickets=100, random_seed=38)
    dashboard = Dashboard(store=store_for(engine, result, "ward_councillor"))
    store, forged = dashboard.store, other_ward(result, dashboard.scope)
    location, notes = synced(dashboard, f"?ward={forged}&status=open")
    assert store.filters.wards == () and store.filters.to_query() == {"status": "open"}
    assert store.state.wards == [store.scope.ward_id] and notes == []
    assert location.search == "?status=open"
    location.search = f"?ward={forged}&status=open,closed"
    assert store.filters == TicketFilters(statuses=("open", "closed")) and location.search == "?status=open%2Cclosed"
    with pytest.raises((TypeError, ValueError)):  # and through the state itself
        store.state.wards = [forged]
    store.set_filters(ward=forged, status="escalated")  # the notebook's way: the ward is dropped
    assert store.filters == TicketFilters(statuses=("escalated",)) and store.state.wards == [store.scope.ward_id]
    assert isinstance(store.scope, Scope) and store.scope.is_councillor


# -- the shared result cache ---------------------------------------------------------------
def test_cached_results_are_shared_only_between_identical_scopes(engine, make_seed, monkeypatch):
    from components import query_cache

    monkeypatch.setattr(query_cache, "_clock", lambda: 1_000_000.0)  # one time bucket for the whole test
    result = make_seed(tickets=300, random_seed=39)
    ward_a, ward_b = result.municipalities[0]["wards"][:2]
    scopes = {
        "manager": scope_of(engine, result, "manager"),
        "admin": scope_of(engine, result, "admin"),
        "councillor a": scope_of(engine, result, "ward_councillor", ward_index=0),
        "councillor b": scope_of(engine, result, "ward_councillor", ward_index=1),
        "other municipality": scope_of(engine, result, "manager", municipality=1),
    }
    assert (scopes["councillor a"].ward_id, scopes["councillor b"].ward_id) == (ward_a, ward_b)
    stores = {name: DashboardStore(scope=scope, engine=engine, cache_ttl_s=60) for name, scope in scopes.items()}
    tables = {name: TicketTable(store=store) for name, store in stores.items()}
    for name, table in tables.items():
        expected = scoped_tickets(engine, scopes[name])
        assert table.tabulator.total_rows == len(expected), name
        assert set(table.tabulator.value.tracking_number) <= set(expected.tracking_number), name
    # Same municipality-wide scope, other user: served from the cache, so a new ticket is not seen yet ...
    add_ticket(engine, scopes["manager"].municipality_id, ward_a)
    before = tables["manager"].tabulator.total_rows
    assert TicketTable(store=stores["admin"]).tabulator.total_rows == before
    # ... while a store that does not share sees it at once.
    fresh = DashboardStore(scope=scopes["manager"], engine=engine, cache_ttl_s=0)
    assert TicketTable(store=fresh).tabulator.total_rows == before + 1


def test_cached_results_last_while_the_change_mark_stands_and_expire_when_it_moves(engine, make_seed, monkeypatch):
    from components import query_cache

    now = [1_000.0]
    monkeypatch.setattr(query_cache, "_clock", lambda: now[0])
    result = make_seed(tickets=50, random_seed=41)
    scope = scope_of(engine, result, "manager")
    mark = [(1, 7)]
    store = DashboardStore(scope=scope, engine=engine, cache_ttl_s=5, change_mark=lambda: mark[0])
    unmarked = DashboardStore(scope=scope, engine=engine, cache_ttl_s=5)

    def total(s: DashboardStore) -> int:
        return int(s.breakdown()["tickets"].sum())

    before = total(store)
    add_ticket(engine, scope.municipality_id, result.municipalities[0]["wards"][0])
    now[0] += 30  # past the short TTL, within the 60 s bound: nothing announced a change
    assert total(store) == before
    assert total(unmarked) == before + 1  # without a mark only the short TTL applies
    mark[0] = (1, 8)  # a live event of this municipality
    assert total(store) == before + 1
    add_ticket(engine, scope.municipality_id, result.municipalities[0]["wards"][0])
    now[0] += 2
    mark[0] = (1, 9)
    assert total(store) == before + 2  # a moved mark: never the old result, not even within the short TTL
    now[0] += 4
    assert total(store) == before + 2
    add_ticket(engine, scope.municipality_id, result.municipalities[0]["wards"][0])
    now[0] += query_cache.MAX_AGE_S
    assert total(store) == before + 3  # a change that published no event shows within the bound
    mark[0] = None  # live updates down
    add_ticket(engine, scope.municipality_id, result.municipalities[0]["wards"][0])
    now[0] += 6
    assert total(store) == before + 4


def test_sign_in_prefetch_loads_exactly_what_the_new_pages_views_ask_for(engine, make_seed, monkeypatch):
    from components import query_cache

    monkeypatch.setattr(query_cache, "_clock", lambda: 2_000_000.0)  # nothing expires during the test
    result = make_seed(tickets=120, random_seed=43)
    manager, councillor = scope_of(engine, result, "manager"), scope_of(engine, result, "ward_councillor")
    tasks = DashboardStore(scope=manager, engine=engine, change_mark=lambda: (1, 1)).prefetch()
    futures.wait(tasks, timeout=60)
    assert len(tasks) == 3 and all(t.done() and t.exception() is None for t in tasks)
    page = DashboardStore(scope=manager, engine=engine, change_mark=lambda: (1, 1))
    with DashboardStore.cache_only():  # the new page's KPI cards, charts and table: every query already answered
        kpis = KpiCards(store=page).load()
        charts = TicketCharts(store=page).load()
        first_page = TicketTable(store=page).load_page()
    rows = scoped_tickets(engine, manager)
    assert kpis.total == len(rows) and int(charts.by_day["created"].sum()) <= len(rows)
    assert int(charts.by_category_status["tickets"].sum()) == len(rows)
    assert first_page.total == len(rows) and len(first_page.frame) == DEFAULT_PAGE_SIZE
    with DashboardStore.cache_only(), pytest.raises(query_cache.CacheMiss):  # never another scope's figures
        KpiCards(store=DashboardStore(scope=councillor, engine=engine)).load()


def test_a_failed_query_is_not_cached(engine, make_seed, tmp_path):
    from components import query_cache

    scope = scope_of(engine, make_seed(tickets=20, random_seed=40), "manager")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return "ok"

    with pytest.raises(RuntimeError):
        query_cache.cached("flaky", engine, scope, (), flaky, ttl_s=60)
    assert query_cache.cached("flaky", engine, scope, (), flaky, ttl_s=60) == "ok"
    assert query_cache.cached("flaky", engine, scope, (), flaky, ttl_s=60) == "ok"
    assert len(calls) == 2


def test_a_folded_card_holds_its_placeholder_until_opened_but_its_view_loads_at_once(engine, make_seed):
    result = make_seed(tickets=120, random_seed=31)
    store = store_for(engine, result, "ward_councillor")
    charts = TicketCharts(store=store)
    waiting = charts.placeholder()
    folded = UnfoldCard(view=charts, title="Charts", placeholder=waiting)
    card = folded.__panel__()
    assert card.collapsed and card.objects == [waiting] and not folded.built
    # Loaded already (here at once; served, in a worker): the figures wait on the server, not the reader.
    own = scoped_tickets(engine, store.scope)
    assert charts.load().by_category_status.tickets.sum() == len(own) > 0
    assert card.select(pn.pane.Bokeh) == []  # no figure in the page yet
    card.collapsed = False  # what the browser reports when the reader opens it
    assert folded.built and len(card.objects) == 1 and card.objects[0] is not waiting
    assert len(card.select(pn.pane.Bokeh)) == 2  # a councillor: by category, and the backlog
    card.collapsed = True
    card.collapsed = False  # opened again: the same view, not a second one
    assert len(card.select(pn.pane.Bokeh)) == 2


def test_a_refresh_that_finds_the_same_page_sends_nothing_to_the_browser(engine, make_seed):
    result = make_seed(tickets=120, random_seed=37)
    store = store_for(engine, result, "manager")
    table = TicketTable(store=store)
    sent: list[int] = []
    table.tabulator.param.watch(lambda event: sent.append(len(event.new)), "value")
    table.reload()  # what a live refresh does when no row of the page changed
    assert sent == []
    add_ticket(engine, store.scope.municipality_id, None, description="a new leak on page one",
               created_at=datetime.now(timezone.utc) + timedelta(minutes=1))  # newest: first on page 1
    table.reload()
    assert sent == [min(table.page_size, table.tabulator.total_rows)]
    assert "a new leak on page one" in set(table.tabulator.value.description)
