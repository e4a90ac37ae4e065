"""The filter inputs as parameters (components.filter_state) and what the store derives from them.

Without a browser, on SQLite and PostgreSQL; the URL in a browser is in
test_browser_dashboard.py.
"""
from __future__ import annotations

import asyncio
import datetime as dt
from urllib.parse import urlencode

import pytest
from panel.util import parse_query

from components.charts import TicketCharts
from components.export import ExportButtons
from components.filter_state import TicketFilterState
from components.filters import FilterBar
from components.kpis import KpiCards
from components.store import DashboardStore
from components.table import TicketTable
from data.filters import TicketFilters

from .helpers.databases import scope_of

JAN_1, JAN_31 = dt.date(2026, 1, 1), dt.date(2026, 1, 31)


def store_for(engine, result, role: str) -> DashboardStore:
    return DashboardStore(scope=scope_of(engine, result, role), engine=engine, cache_ttl_s=0)


@pytest.mark.parametrize("name, value, message", [
    ("statuses", ["open", "bogus"], "unknown status 'bogus'; choose from open, in_progress"),
    ("categories", ["no_such_category"], "unknown category 'no_such_category'; choose from"),
    ("wards", ["W99"], "unknown ward 'W99'; choose from W1, W2"),
    ("search", "x" * 201, "search text is too long (at most 200 characters)"),
    ("search", "pipe\x00", "search text contains a NUL character"),
    ("created_from", "2026-01-01", "only takes date types"),
    ("statuses", "open", "only takes list types"),
])
def test_each_filter_parameter_refuses_what_it_cannot_hold_with_a_message(name, value, message):
    state = TicketFilterState()
    state.set_choices(categories=["water", "roads"], wards=["W1", "W2"])
    state.param.update(statuses=["open"], categories=["water"], wards=["W2"], search="pipe", created_from=JAN_1)
    before = state.param.values()
    with pytest.raises(ValueError) as refused:
        setattr(state, name, value)
    assert message in str(refused.value)
    assert state.param.values() == before


def test_parameters_read_old_comma_links_and_panels_json_lists_and_write_the_comma_form():
    p = TicketFilterState.param
    assert p.statuses.deserialize("open,in_progress") == ["open", "in_progress"]  # old links
    assert p.statuses.deserialize(["open", "in_progress"]) == ["open", "in_progress"]  # JSON, decoded by Panel
    assert p.wards.deserialize(12) == ["12"]  # parse_query made the digits a number
    assert p.statuses.serialize(["open", "in_progress"]) == "open,in_progress" and p.statuses.serialize([]) == ""
    assert p.created_from.deserialize("2026-01-31") == JAN_31
    assert p.created_from.deserialize("2026-01-31T23:00:00") == JAN_31
    assert p.created_from.serialize(JAN_31) == "2026-01-31" and p.created_from.serialize(None) == ""
    assert p.search.deserialize(2026) == "2026" and p.search.deserialize(True) == "true"
    with pytest.raises(ValueError, match="must be a date like 2026-01-31"):
        p.created_from.deserialize("31/01/2026")


@pytest.mark.parametrize("search", ["0012", "2026", "1.50", "TRUE", "[pipe", "{x}", "nan", "-3", "1e5", "pipe", "O'Neil St"])
def test_a_search_comes_back_from_the_url_exactly_as_typed(search):
    p = TicketFilterState.param
    written = p.search.serialize(search)
    read = parse_query("?" + urlencode({"q": written}))  # what Panel's Location hands deserialize
    assert p.search.deserialize(read["q"]) == search
    assert (written == search) == (search in ("2026", "nan", "pipe", "O'Neil St"))  # plain wherever it comes back as it is


def test_dates_in_the_wrong_order_keep_the_results_say_so_and_hold_the_downloads(engine, make_seed):
    result = make_seed(tickets=60, random_seed=61)
    store = store_for(engine, result, "manager")
    bar, export = FilterBar(store=store), ExportButtons(store=store)
    bar.created_from.input.value, bar.created_to.input.value = "2026-01-01", "2026-01-31"
    applied = store.filters
    assert applied == TicketFilters(created_from=JAN_1, created_to=JAN_31) and bar.message == ""

    bar.created_from.input.value = "2026-02-15"  # after "created to"
    assert store.filters == applied  # the views and exports keep reading the last valid filters
    assert bar.message.startswith("Not applied: the 'created from' date is after the 'created to' date.")
    assert "still show the previous filters (from=2026-01-01; to=2026-01-31)" in bar.message
    assert bar._message.visible and bar.created_from.input.value == "2026-02-15"  # the input stays, to correct
    assert asyncio.run(export.download("csv")) is None  # neither range: the inputs and the results disagree
    assert export._status.object.startswith("Not downloaded: the filters as entered are not applied.")

    bar.created_to.input.value = "2026-02-28"
    assert store.filters == TicketFilters(created_from=dt.date(2026, 2, 15), created_to=dt.date(2026, 2, 28))
    assert bar.message == "" and not bar._message.visible
    assert asyncio.run(export.download("csv")) is not None


def test_a_typed_date_that_is_no_date_applies_nothing_until_corrected_or_cleared(engine, make_seed):
    result = make_seed(tickets=60, random_seed=64)
    store = store_for(engine, result, "manager")
    bar, export = FilterBar(store=store), ExportButtons(store=store)
    bar.created_from.input.value = "2026-01-01"
    applied = store.filters
    bar.created_from.input.value = "01/31/2026"  # a phone's habit, not how South Africans write it
    bar.search.value = "pipe"  # another filter changed meanwhile: not applied either
    assert store.filters == applied
    assert bar.message.startswith("Not applied: created from must be a date like 2026-11-30, got '01/31/2026'.")
    assert bar.created_from.input.value == "01/31/2026"  # the text stays, to correct
    assert asyncio.run(export.download("csv")) is None

    bar.created_from.input.value = "2026-01-31"
    assert store.filters == TicketFilters(created_from=JAN_31, search="pipe") and bar.message == ""
    bar.created_from.input.value = "nonsense"
    bar.clear.clicks += 1
    assert store.filters == TicketFilters() and bar.message == "" and bar.created_from.input.value == ""
    store.state.created_to = JAN_31  # the URL's date shows in the box
    assert bar.created_to.input.value == "2026-01-31"


class Counted:
    """Counts the loads of a view class (its own load method, so every load is seen once)."""

    def __init__(self) -> None:
        self.loads: dict[str, int] = {}

    def view(self, cls, *methods: str):
        """``cls`` counting its calls of each of ``methods`` (one method: under the class's name)."""
        counter = self

        def counting(method: str):
            name = cls.__name__ if len(methods) == 1 else f"{cls.__name__}.{method}"

            def load(self, *args, **kwargs):
                counter.loads[name] = counter.loads.get(name, 0) + 1
                return getattr(cls, method)(self, *args, **kwargs)
            return load

        return type(f"Counted{cls.__name__}", (cls,), {method: counting(method) for method in methods})


#: A filter change's loads: each view once; the table its rows and, apart, their total.
EACH_ONCE = {"KpiCards": 1, "TicketCharts": 1, "TicketTable.load_rows": 1, "TicketTable.load_total": 1}


def test_a_filter_change_and_clear_filters_each_load_every_view_once(engine, make_seed):
    result = make_seed(tickets=200, random_seed=62)
    store, counted = store_for(engine, result, "manager"), Counted()
    bar = FilterBar(store=store)
    views = [counted.view(KpiCards, "load")(store=store), counted.view(TicketCharts, "load")(store=store),
             counted.view(TicketTable, "load_rows", "load_total")(store=store)]
    for view in views:
        view.__panel__()  # laid out: the first load
    changes: list[TicketFilters] = []
    store.param.watch(lambda event: changes.append(event.new), "filters")
    ward = result.municipalities[0]["wards"][0]

    counted.loads.clear()
    bar.status.value = ["open", "escalated"]
    assert counted.loads == EACH_ONCE and len(changes) == 1

    store.state.param.update(wards=[ward], search="a", created_from=JAN_1)
    counted.loads.clear()
    changes.clear()
    bar.clear.clicks += 1
    assert counted.loads == EACH_ONCE
    assert changes == [TicketFilters()] and bar.status.value == [] and bar.ward.value == []
    assert bar.search.value == "" and bar.created_from.input.value == ""


def test_a_councillors_ward_stays_theirs_through_the_state_the_widget_and_set_filters(engine, make_seed):
    result = make_seed(tickets=40, random_seed=63)
    store = store_for(engine, result, "ward_councillor")
    bar, own = FilterBar(store=store), store.scope.ward_id
    forged = next(w for w in result.municipalities[0]["wards"] if w != own)
    with pytest.raises((TypeError, ValueError)):
        store.state.wards = [forged]
    store.set_filters(ward=forged, status="open")
    store.clear_filters()
    # Their ward is said in the filters, with no widget to change it (and no chip "×" that does nothing).
    assert store.state.wards == [own] and bar.ward.object == f"<strong>Ward:</strong> {own} (yours)"
    assert store.filters == TicketFilters()  # the Scope fixes the ward; the filters never name one
