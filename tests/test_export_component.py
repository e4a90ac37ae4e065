"""ExportButtons without a browser: off the event loop, progress, FileDownload or streamed (decided on\nclick, never on a refresh), failures as text."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from bokeh.document import Document
from sqlalchemy import event

from components.export import ExportButtons
from components.store import DashboardStore
from data.db import make_engine
from data.filters import TicketFilters

from .helpers.databases import add_tickets, ticket_record
from .helpers.export import expected_csv, oracle_frame, read_csv
from .test_export import scope_for


def buttons(engine, rows: int = 5, **params) -> ExportButtons:
    ours = uuid.uuid4()
    add_tickets(engine, [ticket_record(ours, ward_id=("W1", "W2")[i % 2]) for i in range(rows)])
    store = DashboardStore(scope=scope_for(ours, "ward_councillor", "W1"), engine=engine)
    return ExportButtons(store=store, **params)


def click(view: ExportButtons, fmt: str):
    """What a click on the button runs (FileDownload's callback): the file's bytes, or None when streamed."""
    return asyncio.run(view.download(fmt))


@contextmanager
def counted_statements(engine) -> Iterator[list[str]]:
    """The SQL COUNT statements ``engine`` runs inside the block."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "count(" in statement.lower():
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_export_runs_in_a_worker_thread_with_progress_and_names_the_file(engine):
    view = buttons(engine, rows=7)
    loop_thread, seen = threading.get_ident(), []
    view._progress.param.watch(lambda e: seen.append((e.new, threading.get_ident())), "value")
    data = asyncio.run(view.produce("csv"))
    _, rows = read_csv(data.getvalue())
    assert rows == expected_csv(oracle_frame(engine, view.store.scope, view.store.filters))
    assert seen and seen[-1][0] == 100
    assert all(thread != loop_thread for value, thread in seen if value)  # written off the event loop
    assert view._files["csv"].filename.startswith("tickets_city-of-test_") and not view._progress.visible
    assert "Exported 4 tickets" in view._status.object and not view.busy


def test_buttons_hand_over_to_the_streaming_route_above_the_threshold(engine):
    links = []
    view = buttons(engine, rows=6, large_export_rows=3,
                   download_link=lambda fmt, filters: links.append((fmt, filters)) or f"./export/download?token={fmt}")
    _, rows = read_csv(click(view, "csv").getvalue())  # 3 rows: not above 3, so FileDownload
    assert view.row_count == 3 and len(rows) == 3 and links == [] and view._browser.url == ""
    view.large_export_rows = 2
    assert click(view, "xlsx") is None and links == [("xlsx", TicketFilters())]
    assert view._browser.url.startswith("./export/download?token=xlsx&n=")
    assert "Your download of 3 tickets starts shortly" in view._status.object and not view.busy
    view.store.set_filters(status="resolved")  # nothing left: back to FileDownload
    assert click(view, "csv") is not None and view.row_count == 0 and len(links) == 1
    view.store.set_filters(status="open")
    assert click(view, "xlsx") is None and links[-1] == ("xlsx", TicketFilters(statuses=("open",)))
    assert all(not w.disabled for w in view._files.values())


def test_without_a_download_link_exports_always_use_file_download(engine):
    view = buttons(engine, rows=4, large_export_rows=1)
    assert click(view, "csv") is not None and click(view, "xlsx") is not None
    assert not view.streams and view._browser.url == "" and view.row_count is None  # nothing to decide: no count


def test_store_refreshes_and_filter_changes_never_count_only_a_click_does(engine):
    """Live events refresh the store every few seconds; at 1M tickets a COUNT per session per refresh is too much."""
    view = buttons(engine, rows=6, large_export_rows=2, download_link=lambda fmt, filters: f"./x?token={fmt}")
    # A click counts by loading the figures the views share: one statement on PostgreSQL,
    # two on SQLite (no grouping sets: the counts and the trend separately).
    load = 1 if engine.dialect.name == "postgresql" else 2
    with counted_statements(view.store.engine) as counts:
        document = Document()
        view.__panel__().get_root(document)  # what serving the page builds
        for _ in range(5):
            view.store.refresh()
        view.store.set_filters(status="open")
        view.store.set_filters(status="open,escalated")
        time.sleep(0.5)  # anything scheduled off the loop would have run by now
        assert counts == []
        assert click(view, "csv") is None and view._browser.url.startswith("./x?token=csv")
        assert len(counts) == load
        view.large_export_rows = 1000  # below the threshold: the click's count also drives the progress bar
        view.store.set_filters(status="open")
        assert click(view, "csv") is not None and len(counts) == 2 * load
        view.store.set_filters(status="escalated")
        view.store.figures()  # what the dashboard's views load for these filters ...
        assert len(counts) == 3 * load
        assert click(view, "xlsx") is not None and len(counts) == 3 * load  # ... is the click's count too


def test_a_database_failure_becomes_a_message_not_a_traceback(engine, tmp_path):
    view = buttons(engine)
    broken = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", pool_pre_ping=False)
    store = DashboardStore(scope=view.store.scope, engine=broken)
    failing = ExportButtons(store=store, download_link=lambda fmt, filters: f"./x?token={fmt}")
    assert click(failing, "xlsx") is None  # the count fails, then the FileDownload attempt says why
    assert failing.row_count is None and failing._browser.url == ""
    assert failing._status.object == ("The export failed: the ticket database could not be reached. "
                                      "Try again shortly.")
    assert not failing.busy and not failing._files["xlsx"].disabled


def test_a_councillors_forged_ward_filter_is_neither_applied_nor_audited_by_the_buttons(engine):
    """A ward value written straight into the store (a forged widget value) changes neither rows nor audit."""
    import json

    from data.audit import recent_exports

    view = buttons(engine, rows=6)
    view.store.filters = TicketFilters(statuses=("open",), wards=("W2",))
    _, rows = read_csv(asyncio.run(view.produce("csv")).getvalue())
    applied = TicketFilters(statuses=("open",))
    assert rows == expected_csv(oracle_frame(engine, view.store.scope, applied)) and len(rows) == 3
    [audit] = recent_exports(engine, username=view.store.scope.username)
    assert (audit.channel, TicketFilters.parse(json.loads(audit.filters))) == ("ui", applied)
