"""FilterBar: the sidebar widgets of the store's filter inputs (``store.state``).

Every widget is ``from_param`` of one TicketFilterState parameter, so Panel
keeps widget and parameter in step both ways (the URL and "Clear filters"
write the parameters; the widgets follow). A value a parameter refuses (only
a forged message can send one: the browser keeps to the options and
max_length) is not applied and Panel puts the widget back
(panel/param.py ``link_widget``). A councillor's ward widget shows their ward,
disabled: the parameter is constant, and the Scope fixes the ward anyway.
"""
from __future__ import annotations

import html
import logging
from typing import Any

import panel as pn
import param

from data.filters import MAX_SEARCH_LENGTH, STATUSES
from data.models import VISIBLE_CATEGORIES
from data.named_tickets import known_categories
from data.tickets import visible_ward_ids

from .store import DashboardStore

log = logging.getLogger("opsdash.filters")


def _label(value: str) -> str:
    return value.replace("_", " ").capitalize()


class FilterBar(pn.viewable.Viewer):
    """Status, category, ward (managers/admins), created date range, search."""

    store = param.ClassSelector(class_=DashboardStore)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        store, state = self.store, self.store.state
        try:
            categories = sorted(known_categories(store.engine))  # an admin may have added some
        except Exception:  # database down: the banner says so (below, for the wards)
            categories = list(VISIBLE_CATEGORIES)
        wards = None
        if store.scope.sees_whole_municipality:
            try:
                wards = visible_ward_ids(store.engine, store.scope)
            except Exception:  # database down: the banner says so; the other filters still work
                log.exception("ward list could not be loaded")
                store.report_unavailable()
                wards = []
        state.set_choices(categories=categories, wards=wards)
        wide = dict(sizing_mode="stretch_width")
        self.status = pn.widgets.MultiChoice.from_param(state.param.statuses, options={_label(s): s for s in STATUSES}, **wide)
        self.category = pn.widgets.MultiChoice.from_param(state.param.categories, options={_label(c): c for c in categories}, **wide)
        # A councillor's: their ward, disabled (the parameter is constant).
        self.ward = pn.widgets.MultiChoice.from_param(
            state.param.wards, name="Ward" if wards is not None else "Ward (yours)", **wide)
        # Two pickers rather than a range picker: an open range ("since 1 May") is common.
        self.created_from = pn.widgets.DatePicker.from_param(state.param.created_from, **wide)
        self.created_to = pn.widgets.DatePicker.from_param(state.param.created_to, **wide)
        self.search = pn.widgets.TextInput.from_param(state.param.search, placeholder="tracking number, description or address",
                                                      max_length=MAX_SEARCH_LENGTH, **wide)
        self.clear = pn.widgets.Button(label="Clear filters", color="light", **wide)
        self.clear.on_click(self._clear)
        # Why the inputs are not applied (it may echo what was typed: escaped).
        self._message = pn.pane.HTML(pn.bind(html.escape, store.param.filter_error),
                                     visible=store.param.filter_error.rx.bool(), styles={"color": "#b3261e"},
                                     css_classes=["opsdash-filter-error"], **wide)
        self.widgets = (self.status, self.category, self.ward, self.created_from, self.created_to, self.search)

    def _clear(self, _event: Any = None) -> None:
        # Held: the widgets' and the URL's changes (served: Panel's write, then the dashboard's tidy
        # one) reach the browser as one message.
        with pn.io.hold():
            self.store.clear_filters()

    @property
    def message(self) -> str:
        """Why the inputs are not applied ('' when they are)."""
        return self.store.filter_error

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(*self.widgets, self.clear, self._message, sizing_mode="stretch_width")
