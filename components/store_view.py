"""StoreView: the base of every view that shows data of a DashboardStore.

A view implements ``load()`` (plain, blocking data-layer calls with
``store.scope``) and ``render(data)`` (Panel objects). The base runs ``load``
off the event loop whenever the filters or the data version change, shows a
spinner meanwhile, and turns failures into text: an OpsDashError's own
message, or the store's "database unreachable" banner; never a traceback.
"""
from __future__ import annotations

import asyncio
import html
import logging
from functools import partial
from typing import Any, Callable

import panel as pn
import param
from bokeh.document import Document

from data.errors import DatabaseBusy, OpsDashError
from data.workers import DASHBOARD

from . import query_cache
from .store import DashboardStore

log = logging.getLogger("opsdash.views")
NO_TICKETS = "No tickets match the filters."


def text(value: str, **params: Any) -> pn.pane.HTML:
    """``value`` as literal text in the page font (escaped here, so never interpreted as HTML)."""
    return pn.pane.HTML(html.escape(str(value)), **params)


def set_text(pane: pn.pane.HTML, value: str) -> None:
    """Replace the text of a ``text()`` pane (escaped again: it may echo user input)."""
    pane.object = html.escape(str(value))


def notice(value: str, kind: str = "info") -> pn.pane.HTML:
    """A short message in place of a view."""
    color = "#555" if kind == "info" else "#8a1c1c"
    return text(value, css_classes=["opsdash-notice", f"opsdash-notice-{kind}"],
                styles={"color": color}, sizing_mode="stretch_width")


def guarded_load(store: DashboardStore, load: Callable[[], Any], what: str, *,
                 keep_on_busy: bool = False) -> tuple[bool, Any, str]:
    """``(True, load(), "")``; on failure ``(False, None, message)``, never an exception.

    An OpsDashError's message is for the user. Anything else (database down,
    network, driver) is logged with its traceback, raises the store's banner,
    and gives an empty message: the caller shows its own short text. The
    banner stays until ``what`` loads again (``store.report_loaded``).
    ``keep_on_busy``: DatabaseBusy (no worker free, or DatabaseSlow: stopped at
    the statement timeout) propagates, for LatestLoad to keep what is shown.
    """
    try:
        result = load()
    except query_cache.CacheMiss:
        raise  # not a failure: the caller loads the slow way
    except DatabaseBusy as exc:
        if keep_on_busy:
            raise
        return False, None, str(exc)
    except OpsDashError as exc:
        return False, None, str(exc)
    except Exception:
        log.exception("%s could not load its data", what)
        store.report_unavailable(what)
        return False, None, ""
    store.report_loaded(what)
    return True, result, ""


class LatestLoad:
    """Runs ``fetch`` and hands its result to ``show``; only the latest request is shown.

    In a served session the fetch runs in a worker thread (the event loop
    keeps serving every other session). Meanwhile ``busy`` (if not None) shows Panel's
    loading spinner while it has nothing to show yet; later loads leave
    the figures on screen as they are and report ``on_busy(True)`` /
    ``on_busy(False)`` instead (the page shows one "Updating" note for all
    views). A spinner on every view would repaint each view every frame for
    as long as the queries run: measured, 0.3 s of a 2-core machine's CPU
    per filter change in a browser without a GPU, which a phone shares
    with everything else it does. A result
    that a newer request (a new filter, page or refresh) has overtaken is
    dropped. Results are shown only once the browser has loaded the page:
    Panel does not deliver changes made between building the document and
    the browser's connection (the first loads start while the page is still
    loading, so the queries and the browser's start-up overlap). Outside a
    server (notebook, tests) it runs at once.

    Why not Panel's own (``pn.bind`` of an async function, i.e. ParamFunction;
    panel/param.py of 1.9.4, unchanged in 1.10): with ``defer_load`` the load
    itself starts only once the page has loaded (``_get_model`` ->
    ``state.onload(_replace_pane)``), so the ~1.1 s figures scan at 1,000,000
    tickets would follow the browser's start-up instead of overlapping it (the
    3 s page-load target); without it a result can reach the document before
    the browser has connected, and is lost. ``_eval_async`` cancels the
    previous task but its ``finally`` then sets ``_async_task = None``, so a
    third change can no longer cancel the second, whose older result may land
    last (checked on 1.9.4: three changes 10 ms apart, the second the slowest:
    the second's result stays on screen). It shows a spinner (``loading``) or nothing, where we keep the figures
    and report one "Updating" note; it replaces the pane rather than letting a
    view change its Bokeh models in place; and it has no first paint from the
    shared cache. Each of these costs a target or loses a behaviour.
    """

    def __init__(self, fetch: Callable[[], Any], show: Callable[[Any], None], busy: pn.viewable.Viewable | None,
                 on_busy: Callable[[bool], None] | None = None,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self._fetch, self._show, self._busy, self._on_busy = fetch, show, busy, on_busy
        #: Told the lane's message when no database worker took the fetch in time (data.workers):
        #: what is on screen stays, and the user learns why it did not change.
        self._on_refused = on_refused
        self._shown = False  # something is on screen (later loads keep it there while they run)
        self._reported = False  # on_busy(True) was reported last
        self._requests = 0
        self._page_loaded: asyncio.Event | None = None
        self._closed = False

    def request(self, *_events: Any) -> None:
        self._requests += 1
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            self._show(self._fetch())
            return
        if self._requests == 1 and self._from_cache():
            return
        if self._page_loaded is None:
            self._page_loaded = asyncio.Event()
            pn.state.onload(self._page_loaded.set)  # at once when the page is already loaded
            # A tab closed before its page loaded must not leave a load waiting for ever
            # (holding the session's views, store and document).
            pn.state.on_session_destroyed(self._session_closed)
        # The worker starts now rather than when the loop next runs _run: the rest of this
        # change (other watchers, the widgets' and URL's patches to the browser; ~50 ms on a
        # filter change) then overlaps the queries instead of delaying them.
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not on the event loop (a page built in a worker thread): _run starts it
            fetched = None
        else:
            fetched = DASHBOARD.start(self._fetch)  # with this context (Panel's current document)
        pn.state.execute(partial(self._run, self._requests, doc, fetched))

    def _session_closed(self, *_session_context: Any) -> None:
        self._closed = True
        if self._page_loaded is not None:
            self._page_loaded.set()

    def _from_cache(self) -> bool:
        """Show the first result now if every query behind it is cached (part of the page as sent)."""
        try:
            with DashboardStore.cache_only():
                result = self._fetch()
        except query_cache.CacheMiss:
            return False
        self._display(result)
        return True

    def _display(self, result: Any) -> None:
        self._show(result)
        self._shown = True

    def _set_busy(self, busy: bool) -> None:
        if busy and not self._shown:
            if self._busy is not None:
                self._busy.loading = True
            return
        if self._busy is not None:
            self._busy.loading = False
        if self._on_busy is not None and busy != self._reported:
            self._reported = busy
            self._on_busy(busy)

    def _current(self, request: int) -> bool:
        return request == self._requests and not self._closed

    async def _run(self, request: int, doc: Document, fetched: asyncio.Future | None) -> None:
        self._set_busy(True)
        result = failed = None
        try:
            result = await (DASHBOARD.run(self._fetch) if fetched is None else fetched)
            await self._page_loaded.wait()
        except Exception as exc:  # the busy state must still end (below); then it propagates
            failed = exc
        if self._current(request):
            # Under the document's lock, as Bokeh requires for changes to its models
            # (views that update in place set data sources and axis factors
            # directly), and held: the new figures and the end of the busy state reach
            # the browser as one patch, so it lays the page out once.
            await doc.session_context.with_locked_document(partial(self._finish, request, result, failed))
        if failed is not None and not self._refused(failed):
            raise failed

    def _refused(self, failed: Exception) -> bool:
        return isinstance(failed, DatabaseBusy) and self._on_refused is not None

    async def _finish(self, request: int, result: Any, failed: Exception | None, doc: Document) -> None:
        # async: Bokeh awaits what it is given (before a session exists it calls it without a lock)
        if not self._current(request):
            return
        with pn.io.hold(doc):
            try:
                if failed is None:
                    self._display(result)
                elif self._refused(failed):  # never ran: what is shown stays, the banner says why
                    self._on_refused(str(failed))
            finally:
                self._set_busy(False)


class StoreView(pn.viewable.Viewer):
    """A view of the store's filtered, scoped tickets (subclasses: load + render).

    It reloads when the store's filters or data version change and replaces
    its content in place, so the page layout never jumps to a placeholder.
    """

    store = param.ClassSelector(class_=DashboardStore, doc="The session's store: scope, engine, filters.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        placeholder = self.placeholder()
        self._content = pn.Column(*([] if placeholder is None else [placeholder]), sizing_mode="stretch_width",
                                  min_height=80)
        self._loader = LatestLoad(self.load_safely, self._show, self._content, self.store.view_busy,
                                  partial(self.store.report_busy, what=type(self).__name__))
        self._requested = False
        self._showing_render = False  # what _content shows came from render(), so update() may change it

    @param.depends("store.filters", "store.data_version", watch=True)
    def _reload(self) -> None:
        self._loader.request()

    def load(self) -> Any:
        """Query the data layer for what this view shows (runs in a worker thread)."""
        raise NotImplementedError

    def render(self, data: Any) -> pn.viewable.Viewable:
        raise NotImplementedError

    def placeholder(self) -> pn.viewable.Viewable | None:
        """What the view shows until its first figures arrive: the size ``render`` will take, and no figures.

        Shown from the page's first paint, so the figures' arrival moves nothing
        on the page (a phone's view jumped by the height of each view: Lighthouse's
        cumulative layout shift). None: an empty space of ``min_height``.
        """
        return None

    def update(self, data: Any) -> bool:
        """Show ``data`` by changing what ``render`` built last; False: render anew.

        Views that override this keep their Bokeh models across filter changes
        and live refreshes: changing a few values is a small patch for the
        browser, where a new render rebuilds every model (figures: ~50 each).
        Called only after a successful render.
        """
        return False

    def load_safely(self) -> tuple[Any, pn.viewable.Viewable | None]:
        """``(data, None)``, or ``(None, a notice)`` when loading failed."""
        ok, data, message = guarded_load(self.store, self.load, type(self).__name__, keep_on_busy=True)
        return (data, None) if ok else (None, notice(message or "Not available right now.", "error"))

    def view(self) -> pn.viewable.Viewable:
        """Load and render now (blocking)."""
        data, failed = self.load_safely()
        return failed if failed is not None else self._rendered(data)

    def _rendered(self, data: Any) -> pn.viewable.Viewable:
        self._render_ok = False
        try:
            view = self.render(data)
        except Exception:
            log.exception("%s could not render", type(self).__name__)
            return notice("This view could not be shown.", "error")
        self._render_ok = True
        return view

    def _show(self, loaded: tuple[Any, pn.viewable.Viewable | None]) -> None:
        data, failed = loaded
        if failed is None and self._showing_render:
            try:
                if self.update(data):
                    return
            except Exception:
                log.exception("%s could not update in place", type(self).__name__)
        if failed is not None:
            self._content.objects, self._showing_render = [failed], False
            return
        view = self._rendered(data)
        self._content.objects, self._showing_render = [view], self._render_ok

    def __panel__(self) -> pn.viewable.Viewable:
        if not self._requested:  # the first load starts when the view is first laid out
            self._requested = True
            self._loader.request()
        return self._content
