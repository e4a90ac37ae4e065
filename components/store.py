"""DashboardStore: the one source of truth of a dashboard session.

It holds the Scope (built on the server from the signed-in user's record,
never from the browser), the filter inputs (``state``, a TicketFilterState
that the widgets and the URL write) and ``filters``: the inputs as the
validated, scoped TicketFilters every view and export reads, derived from
``state`` by one ``param.depends``. Views depend on ``filters`` and
``data_version`` and re-query the data layer with ``scope`` when they change.
"""
from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from concurrent.futures import Future
from functools import partial
from typing import Any, Callable, Hashable, Iterator, TypeVar

import pandas as pd
import param

from data.aggregates import Figures, median_first_response_s, ticket_figures
from data.errors import InvalidFilter
from data.filters import TicketFilters, applied_filters
from data.replica import ReadRoute
from data.scope import Scope
from data.tickets import TicketPage, page_rows
from data.workers import DASHBOARD

from . import query_cache
from .filter_state import FILTER_NAMES, TicketFilterState

T = TypeVar("T")
log = logging.getLogger("opsdash.store")

#: What the banner says when a view could not load its data. No internals:
#: the details are in the server log.
UNAVAILABLE = "The ticket database could not be reached, so figures may be out of date."

_cache_only = threading.local()
#: Seconds between automatic reloads while the banner says the database failed (``auto_retry``):
#: soon at first, then every 15 s; jittered so that many pages do not all ask at the same moment.
RETRY_DELAYS_S = (2.0, 4.0, 8.0, 15.0)


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(0.8, 1.2)

#: The dimensions of the breakdown every view folds its counts out of (``DashboardStore.breakdown``).
BREAKDOWN_DIMS = ("category", "status", "ward_id")
#: Days of history in the trend that ``DashboardStore.figures`` loads with the breakdown.
TREND_DAYS = 30
#: Rows in a page of the ticket table, unless a table asks for another size; its order until the reader sorts.
DEFAULT_PAGE_SIZE = 25
DEFAULT_SORT: tuple[tuple[str, str], ...] = (("created_at", "desc"),)

#: Filter keys (as accepted by TicketFilters.parse) that name a ward.
WARD_KEYS = frozenset({"ward", "wards", "ward_id"})


class DashboardStore(param.Parameterized):
    """One per session: the Scope (from the server) and the filter values every view reads."""

    scope = param.ClassSelector(class_=Scope, constant=True, doc="Who is looking; set at construction only.")
    engine = param.Parameter(constant=True, doc=(
        "The SQLAlchemy Engine of the primary database: the Scope's record, categories, wards (small reads)."))
    reads = param.ClassSelector(class_=ReadRoute, default=None, constant=True, allow_None=True, doc=(
        "Where the figures, the table's pages and exports read (``read_engine``); None: ``engine``."))
    state = param.ClassSelector(class_=TicketFilterState, constant=True, doc=(
        "The filter inputs (widgets, URL); built with the store."))
    filters = param.ClassSelector(class_=TicketFilters, default=TicketFilters(), doc=(
        "The filters every view and export applies: ``state`` validated and scoped (derived; see _apply_state)."))
    filter_error = param.String(default="", doc=(
        "Why the inputs in ``state`` are not applied ('' when ``filters`` is what they say)."))
    rejected = param.Dict(default={}, doc=(
        "Inputs whose text is no value at all (a typed date that is not one): name -> why. While any "
        "is, nothing the inputs say is applied (see _apply_state); the inputs write and clear it."))
    data_version = param.Integer(default=0, doc="Bumped by refresh(); views re-query when it changes.")
    live_status = param.Selector(default="off", objects=["off", "connecting", "live", "paused"])
    error = param.String(default="", doc="Why data could not be loaded (shown as a banner); '' when fine.")
    updating = param.Integer(default=0, bounds=(0, None), doc=(
        "How many views are loading new figures while still showing their previous ones (view_busy)."))
    cache_ttl_s = param.Number(default=query_cache.TTL_S, bounds=(0, 60),
                               doc="Share SQL results with other sessions of the same scope this long (0: never).")
    change_mark = param.Callable(default=None, doc=(
        "Returns a token that moves whenever this municipality's tickets may have changed "
        "(the live hub's counter), or None when unknown. Set by the live wiring; lets "
        "results be shared for longer than cache_ttl_s while nothing changes."))

    def __init__(self, **params: Any) -> None:
        if not isinstance(params.get("scope"), Scope):
            # Fail closed: a store without a server-built Scope could only
            # ever be an unscoped view.
            raise TypeError("DashboardStore needs a data.scope.Scope")
        params.setdefault("state", TicketFilterState())
        super().__init__(**params)
        # Which views failed to load, and with what message (the banner): see report_loaded, auto_retry.
        self._health_lock = threading.Lock()
        self._failing: dict[str, str] = {}
        self._retries, self._retry_at = 0, None
        if self.scope.is_councillor:
            self.state.fix_ward(self.scope.ward_id)
        if not self.filters.is_empty():  # filters given at construction: cleaned, and shown in the inputs
            self.set_filters(**self.state.values_of(self._scoped(self.filters)))
        self._apply_state()  # (a state given at construction)

    def _scoped(self, filters: TicketFilters) -> TicketFilters:
        """``filters`` as the data layer applies them (``data.filters.applied_filters``: no ward for a
        councillor), so the URL, the widgets and exports are honest about what is shown."""
        return applied_filters(self.scope, filters)

    def set_filters(self, **values: Any) -> None:
        """Set every filter input from ``values`` (loose input, see TicketFilters.parse; unnamed: cleared).

        For notebooks, scripts and tests; the widgets and the URL write ``state``
        itself. InvalidFilter propagates (the caller shows its message) and the
        inputs and filters stay as they were. A councillor's ward value is ignored.
        """
        if self.scope.is_councillor:
            values = {k: v for k, v in values.items() if k not in WARD_KEYS}
        update = {**self.state.defaults(), **self.state.values_of(self._scoped(TicketFilters.parse(values)))}
        try:
            self.state.param.update(**update)
        except (TypeError, ValueError) as exc:  # a value outside the state's choices (an unknown ward)
            raise InvalidFilter(str(exc)) from None

    @param.depends(*(f"state.{name}" for name in FILTER_NAMES), "rejected", watch=True)
    def _apply_state(self) -> None:
        """The inputs into ``filters`` (one change, so one load per view), or into ``filter_error``."""
        try:
            if self.rejected:  # an input shows text that is no value: applying the others would not be what it says
                raise InvalidFilter("; ".join(self.rejected.values()))
            new = self._scoped(self.state.to_filters())
        except InvalidFilter as exc:
            # The views and the downloads stay on the last valid filters; say so beside the inputs.
            self.filter_error = (f"Not applied: {exc}. The figures and the table still show the previous "
                                 f"filters ({self.filters.describe()}); downloads wait until this is corrected.")
            return
        self.filter_error = ""
        if new != self.filters:
            self.filters = new

    def clear_filters(self) -> None:
        """Every filter input back to its default: one update, so one load per view."""
        self.state.param.update(**self.state.defaults())  # (while an input is rejected, this applies nothing)
        self.rejected = {}

    def refresh(self) -> None:
        """Make every data view re-query (live events, resync, retry after an error)."""
        self.data_version += 1

    def read_engine(self):
        """The engine for a figures, table or export read starting now: a caught-up replica, else the primary.

        Blocking (``data.replica.ReadRoute``): call it inside the load, in its worker lane.
        The cache key stays the primary's: a replica answers only with what the primary holds.
        """
        return self.engine if self.reads is None else self.reads.engine()

    def cached(self, name: str, args: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` (a data-layer call with this store's scope), shared via ``query_cache``.

        Inside ``cache_only()`` nothing is computed: a result that is not in the
        cache raises ``query_cache.CacheMiss``.
        """
        mark = self.change_mark() if self.change_mark is not None else None
        if getattr(_cache_only, "active", False):
            return query_cache.peek(name, self.engine, self.scope, args, self.cache_ttl_s, mark)
        return query_cache.cached(name, self.engine, self.scope, args, compute, self.cache_ttl_s, mark)

    def uncached(self, compute: Callable[[], T], kind: str = "uncached") -> T:
        """``compute()`` never shared (e.g. with a fixed clock); a CacheMiss inside ``cache_only()``."""
        if getattr(_cache_only, "active", False):
            raise query_cache.CacheMiss(kind)
        return query_cache.timed(kind, compute)

    @staticmethod
    @contextlib.contextmanager
    def cache_only() -> Iterator[None]:
        """Within this block (this thread only), ``cached`` answers from the cache or raises CacheMiss.

        A view building its first content tries this on the event loop: a page
        whose figures another session just loaded is sent complete, with no
        round trip to fill it in after the browser connects.
        """
        _cache_only.active = True
        try:
            yield
        finally:
            _cache_only.active = False

    def figures(self, filters: TicketFilters | None = None, days: int = TREND_DAYS, *,
                side_by_side: bool = True) -> Figures:
        """Every count of ``filters`` by category, status and ward, and the daily trend: one load.

        The KPI counts, both bar charts, the table's total and the backlog chart
        all come from this one result, so a page load or filter change scans the
        tickets once for all of them (and views asking at the same time share
        that one query). ``side_by_side``: see ``ticket_figures`` (the result,
        and so what the cache holds, is the same either way).
        """
        # ``filters``: the value the caller read (a worker thread may see a newer one here).
        filters = self.filters if filters is None else filters
        return self.cached("figures", (filters, days), lambda: ticket_figures(
            self.read_engine(), self.scope, filters, BREAKDOWN_DIMS, days=days, side_by_side=side_by_side))

    def breakdown(self, filters: TicketFilters | None = None) -> pd.DataFrame:
        """The counts of ``figures``: a frame of MEASURES by category, status and ward."""
        return self.figures(filters).breakdown

    def median(self, filters: TicketFilters | None = None) -> float | None:
        """Median seconds to first response of ``filters`` (an ordered scan of its own), shared as ``figures``."""
        filters = self.filters if filters is None else filters
        return self.cached("median", filters, lambda: median_first_response_s(self.read_engine(), self.scope, filters))

    def rows(self, filters: TicketFilters | None = None, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE,
             sort: tuple[tuple[str, str], ...] = DEFAULT_SORT) -> pd.DataFrame:
        """The rows of one page of the ticket table, not counted (``data.tickets.page_rows``), shared as ``figures``."""
        filters = self.filters if filters is None else filters
        return self.cached("rows", (filters, page, page_size, sort), lambda: page_rows(
            self.read_engine(), self.scope, filters, page=page, page_size=page_size, sort=sort))

    def total(self, filters: TicketFilters | None = None) -> int:
        """How many tickets ``filters`` matches: the sum of ``breakdown`` (no COUNT of its own)."""
        return int(self.breakdown(filters)["tickets"].sum())

    def page(self, filters: TicketFilters | None = None, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE,
             sort: tuple[tuple[str, str], ...] = DEFAULT_SORT) -> TicketPage:
        """One page of the ticket table with its total: ``rows``, then ``total`` (blocking until both are read)."""
        filters = self.filters if filters is None else filters
        return TicketPage(frame=self.rows(filters, page, page_size, sort), total=self.total(filters),
                          page=page, page_size=page_size)

    def prefetch(self) -> list[Future[None]]:
        """Start loading the figures, the median and the table's first page of the current filters.

        For a sign-in, before the browser has asked for the page: the redirect,
        the page build and the browser's start-up then overlap the figures' scan
        and the median (at 1,000,000 tickets ~1.1 s of database CPU), and the new page's views
        find the results cached, or still running and wait for them
        (``query_cache``). Returns the tasks (DASHBOARD lane). A failure is only logged
        (here, or by the lane when it was full): the views load again and report it.
        """
        filters = self.filters
        # The figures in one scan: the browser loading the page needs the other core more than
        # the figures need it (the views show them only once the page has loaded).
        loads = (("figures", partial(self.figures, filters, side_by_side=False)), ("median", partial(self.median, filters)),
                 ("table", partial(self.rows, filters)))
        return [DASHBOARD.submit(self._prefetch, name, load) for name, load in loads]

    def _prefetch(self, name: str, load: Callable[[], Any]) -> None:
        started = time.perf_counter()
        try:
            load()
        except Exception as exc:
            log.info("prefetching the %s of a new dashboard failed (its views load them again): %s", name, exc)
        else:
            log.info("prefetched the %s of a new dashboard in %.2f s", name, time.perf_counter() - started)

    def view_busy(self, busy: bool) -> None:
        """A view started (True) or finished (False) replacing what it shows."""
        self.updating = max(0, self.updating + (1 if busy else -1))

    def retry(self) -> None:
        """Forget the last error and load everything again (the banner's Retry button)."""
        self.error = ""
        self.refresh()

    def report_busy(self, message: str, what: str | None = None) -> None:
        """No database worker was free for a view's load (``data.workers``), or PostgreSQL stopped it at the
        statement timeout (DatabaseSlow): the message as the banner, until ``what`` loads again."""
        self._failed(what, message)

    def report_unavailable(self, what: str | None = None) -> None:
        """A view (``what``) could not reach the database: one banner for all views, until they load again."""
        self._failed(what, UNAVAILABLE)

    def report_loaded(self, what: str) -> None:
        """``what`` loaded: the banner goes once no view is failing (the database is back)."""
        with self._health_lock:
            if self._failing.pop(what, None) is None or self._failing:
                return
        self._recovered()

    def _failed(self, what: str | None, message: str) -> None:
        with self._health_lock:
            if what is not None:  # None: a one-off that never loads again (it does not hold the banner)
                self._failing[what] = message
            if self._retry_at is None:
                self._retry_at = time.monotonic() + _jittered(RETRY_DELAYS_S[0])
        self.error = message

    def _recovered(self) -> None:
        with self._health_lock:
            self._retries, self._retry_at = 0, None
        if self.error:
            self.error = ""

    def auto_retry(self, now: float | None = None) -> bool:
        """Load again when the banner has been up for the next step of RETRY_DELAYS_S; True when it did.

        The live tick calls it, so a page recovers by itself once the database answers again,
        without a reload or a click on Retry. Never while views are still loading (a slow
        database would otherwise pile up queries).
        """
        if not self.error:
            return False
        now = time.monotonic() if now is None else now
        with self._health_lock:
            if self._retry_at is None:
                self._retry_at = now + _jittered(RETRY_DELAYS_S[0])
            if now < self._retry_at or self.updating:
                return False
            self._retries += 1
            self._retry_at = now + _jittered(RETRY_DELAYS_S[min(self._retries, len(RETRY_DELAYS_S) - 1)])
        if not self._failing:  # only one-off failures: nothing will load to clear the banner
            self._recovered()
        self.refresh()
        return True
