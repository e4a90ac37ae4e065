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

from .filter_state import UrlDate
from .store import DashboardStore

log = logging.getLogger("opsdash.filters")


def _label(value: str) -> str:
    return value.replace("_", " ").capitalize()


#: How a date is written in the inputs and everywhere on the page: as South Africans write it.
DATE_PLACEHOLDER = "yyyy-mm-dd, e.g. 2026-11-30"


class DateText(pn.viewable.Viewer):
    """A date typed as ``2026-11-30`` for one date parameter of the store's filter state.

    Rather than Panel's DatePicker: on a phone its calendar hands over to the
    browser's own date field, which shows the phone's locale (mm/dd/yyyy), has
    no label for screen readers and a tabindex out of page order. Text that is
    no date is not applied, and neither is anything else until it is corrected
    (``store.rejected``): the page never shows results the inputs do not say.
    """

    store = param.ClassSelector(class_=DashboardStore)
    field = param.Selector(objects=["created_from", "created_to"], doc="The TicketFilterState date parameter it shows.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        state = self.store.state
        self.label = state.param[self.field].label
        self.input = pn.widgets.TextInput(label=self.label, placeholder=DATE_PLACEHOLDER, max_length=40,
                                          value=UrlDate.serialize(getattr(state, self.field)),
                                          sizing_mode="stretch_width")
        self.input.param.watch(self._typed, "value")
        state.param.watch(self._shown, self.field)
        self.store.param.watch(self._shown, "rejected")

    def _typed(self, *_events: Any) -> None:
        store, text = self.store, self.input.value
        try:
            value = UrlDate.deserialize(text.strip())
        except ValueError:
            store.rejected = {**store.rejected, self.field: f"{self.label.lower()} must be a date like 2026-11-30, "
                                                           f"got {text[:40]!r}"}
            return
        with param.parameterized.batch_call_watchers(store.state):  # the state's change and the un-rejection: one apply
            setattr(store.state, self.field, value)
            if self.field in store.rejected:
                store.rejected = {k: v for k, v in store.rejected.items() if k != self.field}

    def _shown(self, *_events: Any) -> None:
        """The state's date in the box (the URL, "Clear filters"), unless the box holds text being corrected."""
        if self.field not in self.store.rejected:
            text = UrlDate.serialize(getattr(self.store.state, self.field))
            if self.input.value.strip() != text:
                self.input.value = text

    def __panel__(self) -> pn.viewable.Viewable:
        return self.input


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
        if wards is not None:
            self.ward = pn.widgets.MultiChoice.from_param(state.param.wards, name="Ward", **wide)
        else:  # A councillor's ward is fixed (the parameter is constant): said, not a chip with a "×" that does nothing.
            self.ward = pn.pane.HTML(f"<strong>Ward:</strong> {html.escape(store.scope.ward_id or '')} (yours)",
                                     css_classes=["opsdash-fixed-ward"], **wide)
        # Two dates rather than a range: an open range ("since 1 May") is common.
        self.created_from = DateText(store=store, field="created_from")
        self.created_to = DateText(store=store, field="created_to")
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
