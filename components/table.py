"""TicketTable: one page of the filtered, scoped tickets, paged and sorted in SQL.

Panel's Tabulator with ``pagination='remote'`` still holds the whole frame
on the server and pages it there, which at 1,000,000 tickets costs seconds
and hundreds of MB per session. ``PagedTabulator`` keeps only the current
page: the browser's page and sort requests (``page``, ``sorters``) become
``data.tickets.page_rows`` calls (LIMIT/OFFSET + ORDER BY on the scoped
SELECT), and the page count comes from the figures' count, which loads
apart: the rows show as soon as they are read, however long the count of a
search over millions of tickets takes. (``PagedTabulator`` reaches into
Tabulator's internals, so it lives in ``panel_compat``.)

Citizen text (description, address) uses Tabulator's ``plaintext``
formatter, which escapes markup; no HTML formatter touches it.
"""
from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import pandas as pd
import panel as pn
import param

from data.filters import TicketFilters
from data.tickets import SORTABLE_COLUMNS, TicketPage

from .panel_compat import PagedTabulator
from .store import DEFAULT_PAGE_SIZE, DEFAULT_SORT, DashboardStore
from .store_view import NO_TICKETS, LatestLoad, guarded_load, notice, set_text


#: Column -> header title, in display order.
TABLE_COLUMNS: dict[str, str] = {
    "tracking_number": "Tracking number",
    "category": "Category",
    "status": "Status",
    "severity": "Severity",
    "ward_id": "Ward",
    # What the citizen wrote comes before the dates: at 1440 px it is on screen, not off to the right.
    "description": "Description",
    "address": "Address",
    "created_at": "Created",
    "sla_resolution_deadline": "Resolve by",
    "resolved_at": "Resolved",
    "assigned_to": "Assigned to",
}
UNTRUSTED_COLUMNS = ("description", "address", "assigned_to")
#: Pixel width of every column. Set, not measured: with a width left open, Tabulator's
#: fitData layout sizes it by reading every cell's width in the browser after each new page
#: (25 rows x 11 columns of forced layouts: ~70 ms of a page load's main thread on a 2-core box).
#: Fitted to the table's space at 1440 px (about 1,080 px beside the filters): everything up to
#: Address and Created shows there; a tracking number (and its header's sort arrow) fits whole.
COLUMN_WIDTHS: dict[str, int] = {
    "tracking_number": 150, "category": 100, "status": 95, "severity": 85, "ward_id": 85,
    "description": 230, "address": 170, "created_at": 130, "sla_resolution_deadline": 130,
    "resolved_at": 130, "assigned_to": 115,
}
TIME_FORMAT = "%Y-%m-%d %H:%M"
#: The table's name in the store's failing views (``DashboardStore.report_loaded``).
TABLE_VIEW = "the ticket table"
#: Its total's (the figures' count; the KPI cards report a failure of theirs).
TABLE_TOTAL = "the ticket table's total"


class Rows(NamedTuple):
    """A page of rows as read, with the filters and page they were read for."""
    filters: TicketFilters
    page: int
    frame: pd.DataFrame


class Total(NamedTuple):
    """How many tickets matched, with the filters and the store's data version it was read for."""
    filters: TicketFilters
    data_version: int
    total: int

    def of(self, filters: TicketFilters, data_version: int) -> bool:
        """Whether this is the count of ``filters`` as the data stand at ``data_version``."""
        return self.filters == filters and self.data_version == data_version


def sort_spec(sorters: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Tabulator sorters -> data-layer sort; unknown fields or directions are dropped, not trusted."""
    spec = []
    for sorter in sorters or []:
        field, direction = sorter.get("field"), sorter.get("dir")
        if field in SORTABLE_COLUMNS and field in TABLE_COLUMNS and direction in ("asc", "desc"):
            spec.append((field, direction))
    return spec or list(DEFAULT_SORT)


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Times as local text (the data layer already converted the zone), missing values blank."""
    out = frame[list(TABLE_COLUMNS)].copy()
    for column in ("created_at", "sla_resolution_deadline", "resolved_at"):
        out[column] = out[column].dt.strftime(TIME_FORMAT).fillna("")
    for column in out.columns:
        out[column] = out[column].astype(object).where(out[column].notna(), "")
    out["status"] = out["status"].str.replace("_", " ")
    return out.reset_index(drop=True)


class TicketTable(pn.viewable.Viewer):
    """The ticket list. Filters or a data refresh go back to page 1 / reload the page."""

    store = param.ClassSelector(class_=DashboardStore)
    page_size = param.Integer(default=DEFAULT_PAGE_SIZE, bounds=(5, 200))
    message = param.String(default="", doc="Why the table is empty ('' while it has rows).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.tabulator = PagedTabulator(
            value=display_frame(_empty_frame()), pagination="remote", page_size=self.page_size,
            show_index=False, disabled=True, sizing_mode="stretch_width", layout="fit_data_stretch",
            titles=dict(TABLE_COLUMNS), header_align="left", selectable=False,
            formatters={c: {"type": "plaintext"} for c in UNTRUSTED_COLUMNS},
            sortable={c: c in SORTABLE_COLUMNS for c in TABLE_COLUMNS},
            widths=dict(COLUMN_WIDTHS), css_classes=["opsdash-ticket-table"],
            min_height=200,
            # One page is at most 200 rows: render them all. Tabulator's default virtual
            # renderer sometimes drew no rows when the table sat below the fold.
            configuration={"renderVertical": "basic"},
        )
        self._notice = notice("")
        self._notice.visible = False
        # The Tabulator joins the page with its first page of rows: created empty and
        # filled by a later update, the browser sometimes kept showing no rows.
        self._body = pn.Column(notice("Loading tickets\u2026"), sizing_mode="stretch_width", min_height=200)
        # The rows and their total load apart: a page's rows are a few index entries, its total
        # the count behind the figures (seconds for a search matching millions). The rows show
        # as soon as they are read; until the total is, the pager offers one page more after a
        # full page (``_pager_total``).
        self._total: Total | None = None  # the last total read
        self._on_screen: TicketFilters | None = None  # the filters of the rows shown
        self._loader = LatestLoad(self._fetch, self._show, self._body, self.store.view_busy,
                                  partial(self.store.report_busy, what=TABLE_VIEW))
        self._total_loader = LatestLoad(self._fetch_total, self._show_total, None,
                                        on_refused=partial(self.store.report_busy, what=TABLE_TOTAL))
        self.tabulator.param.watch(self._loader.request, ["page", "sorters"])
        self._requested = False
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            self._first_request()  # notebook and tests: loaded now
        # Served: on first layout (``__panel__``), once the session has applied the
        # URL's filters, so a page never shows other rows first.

    # -- loading -------------------------------------------------------------
    def load_page(self) -> TicketPage:
        """The current page from the database, with its total (blocking)."""
        page, sort = self._requested_page()
        return self.store.page(self.store.filters, page, self.page_size, sort)

    def _requested_page(self) -> tuple[int, tuple[tuple[str, str], ...]]:
        return max(1, int(self.tabulator.page or 1)), tuple(sort_spec(self.tabulator.sorters))

    def load_rows(self) -> Rows:
        """The rows of the current page from the database, not counted (blocking)."""
        filters, (page, sort) = self.store.filters, self._requested_page()
        return Rows(filters, page, self.store.rows(filters, page, self.page_size, sort))

    def load_total(self) -> Total:
        """How many tickets the current filters match, with the filters and data version read (blocking)."""
        filters, version = self.store.filters, self.store.data_version
        return Total(filters, version, self.store.total(filters))

    def _fetch(self) -> tuple[Rows | None, str]:
        ok, rows, message = guarded_load(self.store, self.load_rows, TABLE_VIEW, keep_on_busy=True)
        return (rows, "") if ok else (None, message or "The tickets could not be loaded right now.")

    def _show(self, fetched: tuple[Rows | None, str]) -> None:
        rows, error = fetched
        if rows is None:
            self.message = error
        else:
            empty = rows.frame.empty
            self.message = NO_TICKETS if empty and rows.page == 1 else ""
            if empty and rows.page > 1:
                # Past the end: rows vanished under us (a refresh), or the page the pager offered
                # beyond a full one before the count came. The last page when the count is of
                # these rows; else the page before (the count, when it comes, moves on from there).
                current = self._total is not None and self._total.of(rows.filters, self.store.data_version)
                self.tabulator.page = self._page_count() if current else rows.page - 1
                return
            self._on_screen = rows.filters
            self.tabulator.total_rows = self._pager_total(rows.filters, rows.page, len(rows.frame))
            shown = display_frame(rows.frame)
            # A live refresh mostly finds page 1 as it was: sent again, the browser would redraw
            # every row and lay the page out anew.
            if not shown.equals(self.tabulator.value):
                self.tabulator.value = shown
            if self.tabulator not in self._body.objects:
                self._body.objects = [self.tabulator]
        set_text(self._notice, self.message)
        self._notice.visible = bool(self.message)

    def _pager_total(self, filters: TicketFilters, page: int, shown: int) -> int:
        """The total the pager counts pages of, for ``page`` of ``filters`` showing ``shown`` rows: the one
        read for these filters (never fewer rows than are shown), else as far as is known: after a full
        page, one row more."""
        seen = (page - 1) * self.page_size + shown
        if self._total is not None and self._total.filters == filters:
            return max(self._total.total, seen)
        return seen + (1 if shown == self.page_size else 0)

    def _page_count(self) -> int:
        return max(1, -(-self._total.total // self.page_size)) if self._total is not None else 1

    def _fetch_total(self) -> Total | None:
        # A failure is the figures' own (the KPI cards report it too); the pager keeps what it shows.
        ok, total, _message = guarded_load(self.store, self.load_total, TABLE_TOTAL)
        return total if ok else None

    def _show_total(self, fetched: Total | None) -> None:
        if fetched is None:
            return
        self._total = fetched
        if fetched.filters != self._on_screen or self.tabulator not in self._body.objects:
            return  # not the rows on screen: rows of these filters take it when they are shown
        if self.tabulator.page > self._page_count():  # rows vanished under us (a refresh)
            self.tabulator.page = self._page_count()
            return
        self.tabulator.total_rows = self._pager_total(fetched.filters, self.tabulator.page, len(self.tabulator.value))

    def reload(self) -> None:
        """Load and show the current page and its total now (blocking; notebooks and tests)."""
        self._show_total(self._fetch_total())
        self._show(self._fetch())

    # -- reactions ---------------------------------------------------------------
    @param.depends("store.data_version", watch=True)
    def _on_refresh(self) -> None:
        self._loader.request()
        self._total_loader.request()

    @param.depends("store.filters", watch=True)
    def _on_filters(self, *_events) -> None:
        if self.tabulator.page != 1:
            self.tabulator.page = 1  # new filters start on page 1 (the page watcher reloads)
        else:
            self._loader.request()
        self._total_loader.request()

    def _first_request(self) -> None:
        if not self._requested:
            self._requested = True
            self._loader.request()
            self._total_loader.request()

    def __panel__(self) -> pn.viewable.Viewable:
        self._first_request()
        return pn.Column(self._notice, self._body, sizing_mode="stretch_width")


def _empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in TABLE_COLUMNS})
    for column in ("created_at", "sla_resolution_deadline", "resolved_at"):
        frame[column] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame
