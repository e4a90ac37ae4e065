"""KpiCards: headline figures of the filtered, scoped set, computed in SQL."""
from __future__ import annotations

import html
from typing import Any

import panel as pn
import param

from data.aggregates import Kpis, ticket_kpis

from .store_view import StoreView, text


def format_duration(seconds: float | None) -> str:
    """``1 d 4 h``, ``3 h 20 min``, ``12 min``; an em dash when unknown."""
    if seconds is None:
        return "\u2014"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def matching_text(count: int) -> str:
    """``1 ticket matches the filters`` / ``1,234 tickets match the filters``."""
    return f"{count:,} ticket matches the filters" if count == 1 else f"{count:,} tickets match the filters"


RESPONSE_BREACHES = "Response SLA missed (all tickets, resolved too)"
RESOLUTION_BREACHES = "Resolution SLA missed (all tickets, resolved too)"


def kpi_values(kpis: Kpis) -> dict[str, str]:
    """Card title -> shown text, in display order (also what tests compare)."""
    rate = kpis.resolution_rate
    return {
        "Open tickets": f"{kpis.open:,}",
        "Created today": f"{kpis.created_today:,}",
        # These two count every matching ticket, resolved ones too (a late answer stays late): unlike
        # "Open tickets", and the titles say so.
        RESPONSE_BREACHES: f"{kpis.response_breaches:,}",
        RESOLUTION_BREACHES: f"{kpis.resolution_breaches:,}",
        "Median first response": format_duration(kpis.median_first_response_s),
        "Resolution rate": "\u2014" if rate is None else f"{rate:.0%}",
    }


ALERT_TITLES = frozenset({RESPONSE_BREACHES, RESOLUTION_BREACHES})
#: The cards' titles, in display order (``kpi_values`` of any figures has them).
KPI_TITLES = tuple(kpi_values(Kpis(total=0, open=0, created_today=0, response_breaches=0, resolution_breaches=0,
                                   resolved=0, median_first_response_s=None)))


def _value_styles(alert: bool) -> dict[str, str]:
    return {"font-size": "1.8em", "font-weight": "600", "color": "#b3261e" if alert else "#1a1a1a"}


def _card(title: str, value: Any, styles: Any, kind: str = "kpi") -> pn.viewable.Viewable:
    return pn.Column(
        text(title, styles={"font-size": "0.85em", "color": "#555"}, margin=(6, 12, 0, 12),
             css_classes=[f"opsdash-{kind}-title"]),
        pn.pane.HTML(value, styles=styles, margin=(0, 12, 8, 12), css_classes=[f"opsdash-{kind}-value"]),
        css_classes=[f"opsdash-{kind}"], width=165, margin=0,
        styles={"background": "white", "border": "1px solid #ddd", "border-radius": "6px"},
    )


def _layout(cards: list[pn.viewable.Viewable], caption: pn.viewable.Viewable) -> pn.viewable.Viewable:
    return pn.Column(pn.FlexBox(*cards, gap="10px", flex_wrap="wrap", sizing_mode="stretch_width"),
                     caption, sizing_mode="stretch_width")


#: The cards' value line before the figures arrive: a line of the same height, no figure.
PENDING = "\u00a0"


class KpiCards(StoreView):
    """Open, created today, SLA breaches, median first response, resolution rate."""

    now = param.Date(default=None, doc="Fixed 'now' for tests; None: the current time.")
    shown = param.ClassSelector(class_=Kpis, default=None, doc="The figures on the cards (render/update set it).")

    def load(self) -> Kpis:
        store, now = self.store, self.now
        if now is not None:  # a fixed clock (tests) is never shared
            return store.uncached(lambda: ticket_kpis(store.read_engine(), store.scope, store.filters, now=now), "kpis")
        filters = store.filters
        # The median first: meanwhile the charts or the table start the figures that the
        # counts below are folded out of (two scans at once, one per core).
        median = store.median(filters)
        return Kpis.from_breakdown(store.breakdown(filters), median)

    def render(self, data: Kpis) -> pn.viewable.Viewable:
        """Cards bound to ``shown``: later figures change their text and colour only (``update``)."""
        self.shown = data
        values = self.param.shown.rx().rx.pipe(kpi_values)
        cards = [_card(title, values[title].rx.pipe(html.escape),
                       values[title].rx.pipe(lambda value, alert=title in ALERT_TITLES: _value_styles(alert and value != "0")))
                 for title in kpi_values(data)]
        caption = pn.pane.HTML(self.param.shown.rx().total.rx.pipe(matching_text), styles={"color": "#555"},
                               css_classes=["opsdash-kpi-total"])
        return _layout(cards, caption)

    def placeholder(self) -> pn.viewable.Viewable:
        """The cards with their titles and no figures (own classes: nothing reads them as values)."""
        cards = [_card(title, PENDING, _value_styles(False), kind="kpi-pending") for title in KPI_TITLES]
        return _layout(cards, pn.pane.HTML(PENDING, css_classes=["opsdash-kpi-pending-total"]))

    def update(self, data: Kpis) -> bool:
        self.shown = data
        return True
