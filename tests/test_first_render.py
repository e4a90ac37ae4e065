"""A served page whose figures are already in the shared cache is sent complete.

Views normally load in a worker thread and show their data once the
browser reports the page loaded. When every query behind a view is in the
process-wide cache (another session of the same scope just loaded them),
the view fills in while the document is built, so the first message to the
browser already holds the figures. A Bokeh Python client never reports a
page load, which makes the difference visible without a browser.
"""
from __future__ import annotations

import gc
import weakref

import panel as pn
from bokeh.client import pull_session

from components import query_cache
from components.charts import TicketCharts
from components.kpis import KpiCards, matching_text
from components.store import DashboardStore
from components.table import TicketTable
from data.tickets import scoped_tickets

from .helpers.databases import scope_of
from .helpers.live import wait_until
from .helpers.servers import served


def document_text(url: str) -> str:
    """Every text and table cell of the document as first sent to a client."""
    session = pull_session(url=url)
    try:
        parts = []
        for model in session.document.models:
            text = getattr(model, "text", None)
            if isinstance(text, str):
                parts.append(text)
            data = getattr(model, "data", None)
            if isinstance(data, dict):
                parts.extend(str(v) for column in data.values() for v in list(column))
        return "\n".join(parts)
    finally:
        session.close()


def test_page_with_cached_figures_is_sent_complete_and_without_them_is_not(engine, make_seed):
    query_cache.clear()
    result = make_seed(tickets=80, random_seed=44)
    scope = scope_of(engine, result, "manager")
    expected = scoped_tickets(engine, scope)
    total_text = matching_text(len(expected))

    served_stores: list[weakref.ref] = []

    def app():
        store = DashboardStore(scope=scope, engine=engine, cache_ttl_s=60)
        served_stores.append(weakref.ref(store))
        return pn.Column(KpiCards(store=store), TicketTable(store=store), TicketCharts(store=store))

    def sessions_gone() -> bool:
        gc.collect()
        return all(ref() is None for ref in served_stores)

    with served(app) as url:
        cold = document_text(url)
        assert total_text not in cold and expected.tracking_number.iloc[0] not in cold
        # Another session of the same scope loads the figures (here: the same views, blocking).
        store = DashboardStore(scope=scope, engine=engine, cache_ttl_s=60)
        KpiCards(store=store).view(), TicketCharts(store=store).view(), TicketTable(store=store).reload()
        warm = document_text(url)
        assert total_text in warm
        assert expected.tracking_number.iloc[0] in warm  # the table's first page
        assert "Tickets by category and status" in warm  # the charts (Bokeh figures) too
        wait_until(sessions_gone, what="the closed sessions to be destroyed")
    query_cache.clear()
