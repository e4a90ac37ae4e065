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
from typing import Any

import panel as pn
import param

from data.errors import OpsDashError

from .store import DashboardStore

log = logging.getLogger("opsdash.views")


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


class StoreView(pn.viewable.Viewer):
    """A view of the store's filtered, scoped tickets (subclasses: load + render)."""

    store = param.ClassSelector(class_=DashboardStore, doc="The session's store: scope, engine, filters.")

    def load(self) -> Any:
        """Query the data layer for what this view shows (runs in a worker thread)."""
        raise NotImplementedError

    def render(self, data: Any) -> pn.viewable.Viewable:
        raise NotImplementedError

    def load_safely(self) -> tuple[Any, pn.viewable.Viewable | None]:
        """``(data, None)``, or ``(None, a notice)`` when loading failed."""
        try:
            return self.load(), None
        except OpsDashError as exc:
            return None, notice(str(exc), "error")
        except Exception:  # database down, network, driver: the log has the details
            log.exception("%s could not load its data", type(self).__name__)
            self.store.report_unavailable()
            return None, notice("Not available right now.", "error")

    async def _view(self, filters: Any = None, data_version: int = 0) -> pn.viewable.Viewable:
        data, failed = await asyncio.to_thread(self.load_safely)
        if failed is not None:
            return failed
        try:
            return self.render(data)
        except Exception:
            log.exception("%s could not render", type(self).__name__)
            return notice("This view could not be shown.", "error")

    def __panel__(self) -> pn.viewable.Viewable:
        bound = pn.bind(self._view, self.store.param.filters, self.store.param.data_version)
        return pn.panel(bound, loading_indicator=True, sizing_mode="stretch_width")
