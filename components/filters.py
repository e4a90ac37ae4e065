"""FilterBar: the sidebar widgets that write filter values into the store.

Widgets are the only writers of ``store.filters`` besides the URL (both go
through ``DashboardStore.set_filters``). A councillor gets no usable ward
widget: the ward is fixed by their Scope, and even a value forced into the
widget from the server side is dropped by the store.
"""
from __future__ import annotations

import logging
from typing import Any

import panel as pn
import param

from data.errors import InvalidFilter
from data.filters import STATUSES
from data.models import VISIBLE_CATEGORIES
from data.named_tickets import known_categories
from data.tickets import visible_ward_ids

from .store import DashboardStore
from .store_view import set_text, text

log = logging.getLogger("opsdash.filters")


def _label(value: str) -> str:
    return value.replace("_", " ").capitalize()


class FilterBar(pn.viewable.Viewer):
    """Status, category, ward (managers/admins), created date range, search."""

    store = param.ClassSelector(class_=DashboardStore)
    message = param.String(default="", doc="Why the last change was refused ('' when accepted).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        scope = self.store.scope
        self.status = pn.widgets.MultiChoice(label="Status", options={_label(s): s for s in STATUSES}, sizing_mode="stretch_width")
        try:
            categories = sorted(known_categories(self.store.engine))  # an admin may have added some
        except Exception:  # database down: the banner says so (below, for the wards)
            categories = list(VISIBLE_CATEGORIES)
        self.category = pn.widgets.MultiChoice(label="Category", options={_label(c): c for c in categories}, sizing_mode="stretch_width")
        if scope.sees_whole_municipality:
            try:
                wards = visible_ward_ids(self.store.engine, scope)
            except Exception:  # database down: the banner says so; the other filters still work
                log.exception("ward list could not be loaded")
                self.store.report_unavailable()
                wards = []
            self.ward = pn.widgets.MultiChoice(label="Ward", options=wards, sizing_mode="stretch_width")
        else:
            # Shown for orientation only; the store ignores whatever it holds.
            self.ward = pn.widgets.MultiChoice(label="Ward (yours)", options=[scope.ward_id], value=[scope.ward_id], disabled=True,
                sizing_mode="stretch_width")
        # Two pickers rather than a range picker: an open range ("since 1 May") is common.
        self.created_from = pn.widgets.DatePicker(label="Created from", sizing_mode="stretch_width")
        self.created_to = pn.widgets.DatePicker(label="Created to", sizing_mode="stretch_width")
        self.search = pn.widgets.TextInput(label="Search", placeholder="tracking number, description or address",
            max_length=200, sizing_mode="stretch_width")
        self.clear = pn.widgets.Button(label="Clear filters", color="light", sizing_mode="stretch_width")
        self._message = text("", visible=False, styles={"color": "#b3261e"}, css_classes=["opsdash-filter-error"])
        self._syncing = False
        self.widgets = (self.status, self.category, self.ward, self.created_from, self.created_to, self.search)
        for widget in self.widgets:
            widget.param.watch(self._on_widget, "value")
        self.clear.on_click(self._on_clear)
        self.store.param.watch(self._on_store, "filters")
        self._on_store()

    def widget_values(self) -> dict[str, Any]:
        """The widgets' values as filter input (``TicketFilters.parse`` keys)."""
        values: dict[str, Any] = {
            "status": list(self.status.value), "category": list(self.category.value),
            "from": self.created_from.value, "to": self.created_to.value, "q": self.search.value or "",
        }
        if self.store.scope.sees_whole_municipality:
            values["ward"] = list(self.ward.value)
        return values

    def apply(self) -> None:
        """Write the widgets into the store; a refused value leaves the store as it was."""
        try:
            self.store.set_filters(**self.widget_values())
        except InvalidFilter as exc:
            self.message = str(exc)  # widgets keep the input, so it can be corrected
        else:
            self.message = ""
            self._on_store()  # show what the store kept (a forced councillor ward goes back)
        set_text(self._message, self.message)
        self._message.visible = bool(self.message)

    def _on_widget(self, *_events) -> None:
        if not self._syncing:
            self.apply()

    def _on_clear(self, *_events) -> None:
        self.store.set_filters()

    def _on_store(self, *_events) -> None:
        """Show the store's filters (set from the URL, cleared, or cleaned by the store)."""
        f = self.store.filters
        self._syncing = True
        try:
            self.status.value = list(f.statuses)
            self.category.value = list(f.categories)
            if self.store.scope.sees_whole_municipality:
                self.ward.value = list(f.wards)
            else:
                self.ward.value = [self.store.scope.ward_id]
            self.created_from.value = f.created_from
            self.created_to.value = f.created_to
            self.search.value = f.search
        finally:
            self._syncing = False

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(*self.widgets, self.clear, self._message, sizing_mode="stretch_width")
