"""ExportButtons without a browser: off the event loop, progress, mode switch, failures as text."""
from __future__ import annotations

import asyncio
import threading
import uuid

from components.export import LABELS, ExportButtons
from components.store import DashboardStore
from data.db import make_engine
from data.filters import TicketFilters

from .conftest import add_tickets, ticket_record
from .export_support import expected_csv, oracle_frame, read_csv
from .test_export import scope_for


def buttons(engine, rows: int = 5, **params) -> ExportButtons:
    ours = uuid.uuid4()
    add_tickets(engine, [ticket_record(ours, ward_id=("W1", "W2")[i % 2]) for i in range(rows)])
    store = DashboardStore(scope=scope_for(ours, "ward_councillor", "W1"), engine=engine)
    view = ExportButtons(store=store, **params)
    view.update_mode()  # served, __panel__ runs this off the event loop
    return view


def visible_labels(view: ExportButtons) -> list[tuple[str, str]]:
    files = [(w.label, "file") for w in view._files.values() if w.visible]
    links = [(w.label, "link") for w in view._links.values() if w.visible]
    return files + links


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
                   download_link=lambda fmt, filters: links.append((fmt, filters)) or f"/export/download?token={fmt}")
    assert view.row_count == 3 and visible_labels(view) == [(label, "file") for label in LABELS.values()]
    view.large_export_rows = 2
    view.update_mode()
    assert visible_labels(view) == [(label, "link") for label in LABELS.values()]
    view.store.set_filters(status="resolved")  # nothing left: back to FileDownload
    asyncio.run(view._counted_buttons())  # what the page runs off the event loop on every filter change
    assert view.row_count == 0 and visible_labels(view) == [(label, "file") for label in LABELS.values()]
    view.store.set_filters(status="open")
    assert view.start_streamed("xlsx").endswith("token=xlsx") and links == [("xlsx", TicketFilters(statuses=("open",)))]
    assert view._browser.url.startswith("/export/download?token=xlsx&n=")


def test_without_a_download_link_exports_always_use_file_download(engine):
    view = buttons(engine, rows=4, large_export_rows=1)
    assert not view.streams and visible_labels(view) == [(label, "file") for label in LABELS.values()]


def test_a_database_failure_becomes_a_message_not_a_traceback(engine, tmp_path):
    view = buttons(engine)
    broken = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", pool_pre_ping=False)
    store = DashboardStore(scope=view.store.scope, engine=broken)
    failing = ExportButtons(store=store)
    asyncio.run(failing._counted_buttons())
    assert failing.row_count is None
    assert asyncio.run(failing.produce("xlsx")) is None
    assert failing._status.object == ("The export failed: the ticket database could not be reached. "
                                      "Try again shortly.")
    assert not failing.busy and not failing._files["xlsx"].disabled
