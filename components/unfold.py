"""UnfoldCard: a folded section whose view the browser builds only once the reader opens it.

A folded Panel Card still sends everything in it, and the browser builds it
hidden (and redraws it at each live refresh): a phone's data and main-thread
time for what nobody looks at. Here the card holds only a placeholder until
its ``collapsed`` turns False in the browser; the view then goes in. On a
phone the live feed waits like this (dashboard_app.dashboard), one tap away.

The view is laid out on the server at once: a StoreView's first load starts
with the page, so its figures are ready when the reader opens the card.
"""
from __future__ import annotations

from typing import Any

import panel as pn
import param


class UnfoldCard(pn.viewable.Viewer):
    """A collapsed Card around ``placeholder``; ``view`` replaces it the first time the card is opened."""

    view = param.Parameter(doc="What the card shows: anything pn.panel accepts (a StoreView starts loading now).")
    title = param.String(default="")
    placeholder = param.Parameter(default=None, doc="Shown until then (the card is folded: rarely seen).")
    css_classes = param.List(default=[], item_type=str)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._view = pn.panel(self.view)  # a StoreView's first load starts here, not on opening
        waiting = self.placeholder if self.placeholder is not None else pn.Spacer(height=80)
        self.card = pn.Card(waiting, title=self.title, collapsed=True, sizing_mode="stretch_width",
                            css_classes=list(self.css_classes))
        self._watcher = self.card.param.watch(self._opened, "collapsed")

    @property
    def built(self) -> bool:
        return self._watcher is None

    def _opened(self, event: param.parameterized.Event) -> None:
        if event.new or self._watcher is None:
            return
        self.card.param.unwatch(self._watcher)
        self._watcher = None
        self.card.objects = [self._view]

    def __panel__(self) -> pn.viewable.Viewable:
        return self.card
