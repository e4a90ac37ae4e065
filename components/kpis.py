"""KpiCards: headline figures of the filtered, scoped set, computed in SQL."""
from __future__ import annotations

import html
from typing import Any

import panel as pn
import param

from data.aggregates import Kpis, ticket_kpis

from .store_view import StoreView


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


#: The cards are one HTML pane (with its placeholder, 2 Bokeh models): as Panel columns of two panes
#: each they were 42, each with a shadow root of its own for the browser to build and lay out.
KPI_CSS = """
.opsdash-kpi-cards { display: flex; flex-wrap: wrap; gap: 10px; }
.opsdash-kpi, .opsdash-kpi-pending { width: 165px; box-sizing: border-box; background: white;
  border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px 8px 12px; }
.opsdash-kpi-title, .opsdash-kpi-pending-title { font-size: 0.85em; color: #555; }
.opsdash-kpi-value, .opsdash-kpi-pending-value { font-size: 1.8em; font-weight: 600; color: #1a1a1a; }
.opsdash-kpi-value.opsdash-alert { color: #b3261e; }
.opsdash-kpi-total, .opsdash-kpi-pending-total { color: #555; margin-top: 10px; }
"""


def cards_html(values: dict[str, str], total: str, kind: str = "kpi") -> str:
    """The cards (title -> shown text) and the caption as markup; every text escaped here."""
    cards = []
    for title, value in values.items():
        alert = " opsdash-alert" if kind == "kpi" and title in ALERT_TITLES and value != "0" else ""
        cards.append(f'<div class="opsdash-{kind}"><div class="opsdash-{kind}-title">{html.escape(title)}</div>'
                     f'<div class="opsdash-{kind}-value{alert}">{html.escape(value)}</div></div>')
    return (f'<div class="opsdash-kpi-cards">{"".join(cards)}</div>'
            f'<div class="opsdash-{kind}-total">{html.escape(total)}</div>')


def _pane(markup: Any) -> pn.pane.HTML:
    return pn.pane.HTML(markup, stylesheets=[KPI_CSS], sizing_mode="stretch_width", css_classes=["opsdash-kpis"])


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
        """The cards bound to ``shown``: later figures change the pane's text only (``update``)."""
        self.shown = data
        return _pane(self.param.shown.rx().rx.pipe(lambda kpis: cards_html(kpi_values(kpis), matching_text(kpis.total))))

    def placeholder(self) -> pn.viewable.Viewable:
        """The cards with their titles and no figures (own classes: nothing reads them as values)."""
        return _pane(cards_html(dict.fromkeys(KPI_TITLES, PENDING), PENDING, kind="kpi-pending"))

    def update(self, data: Kpis) -> bool:
        self.shown = data
        return True
