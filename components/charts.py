"""Charts of the filtered, scoped set: by category and status, backlog over time, per ward.

Every figure comes from the store's shared ``figures`` (one SQL scan in
``data.aggregates`` for the bars and the trend); no rows are loaded. Plain Bokeh figures rather than hvPlot: building three HoloViews
plots took ~0.5 s of server CPU each per page load, Bokeh figures ~20 ms,
and a page load has a 3 s budget on a shared 2-core server. Labels
(categories, statuses, ward ids) are drawn by Bokeh as canvas text, and
tooltip fields are escaped by Bokeh, so nothing is interpreted as HTML.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem, NumeralTickFormatter, Range1d
from bokeh.plotting import figure

from data.filters import STATUSES
from data.aggregates import pair_counts

from .store import TREND_DAYS
from .store_view import StoreView

#: One colour per status in every chart, so a glance across charts agrees.
STATUS_COLORS = {"open": "#e0a030", "in_progress": "#1f77b4", "escalated": "#b3261e",
                 "resolved": "#2e7d32", "closed": "#8c8c8c"}
LINE_COLORS = {"created": "#1f77b4", "resolved": "#2e7d32", "backlog": "#333333"}
HEIGHT = 300


@dataclass(frozen=True)
class ChartData:
    by_category_status: pd.DataFrame
    by_day: pd.DataFrame
    by_ward_status: pd.DataFrame | None  # None: this scope is one ward (councillor)


def _figure(title: str, **kwargs) -> figure:
    # No pan/zoom tools (only the hover added below): with the toolbar hidden they would
    # only hijack a phone's scrolling, and each figure's ~12 tool models cost every page load.
    # The y range is set here from the data (``fit_counts``), not computed by the browser:
    # a browser-computed range is sent back to the server after every update.
    fig = figure(title=title, height=HEIGHT, sizing_mode="stretch_width", toolbar_location=None, tools="",
                 y_range=Range1d(0, 1), **kwargs)
    fig.title.text_font_size = "13px"
    fig.yaxis.axis_label = "tickets"
    fig.yaxis.formatter = NumeralTickFormatter(format="0,0")  # 200,000 rather than 2.000e+5
    fig.yaxis.ticker.min_interval = 1  # counts: no 0.2-ticket ticks for small numbers
    fig.outline_line_color = None
    return fig


def bar_columns(long: pd.DataFrame, x: str) -> dict[str, list]:
    """Stacked bar data: per ``x`` value, one row per status in STATUSES order (zeros included).

    Columns: ``x``, ``status`` (display name), ``tickets``, ``bottom`` and ``top`` (where the
    segment sits in its stack) and ``color``. One glyph draws every segment: five stacked
    renderers (``vbar_stack``) cost ~40 more models per chart, which the server builds and the
    browser lays out on every page load.
    """
    wide = long.assign(**{x: long[x].fillna("(no ward)")}).pivot_table(
        index=x, columns="status", values="tickets", aggfunc="sum", fill_value=0)
    wide = wide.reindex(columns=list(STATUSES), fill_value=0)
    columns: dict[str, list] = {key: [] for key in (x, "status", "tickets", "bottom", "top", "color")}
    for key, counts in zip(wide.index.astype(str), wide.itertuples(index=False)):
        bottom = 0
        for status, count in zip(STATUSES, map(int, counts)):
            for name, value in ((x, key), ("status", status.replace("_", " ")), ("tickets", count),
                                ("bottom", bottom), ("top", bottom + count), ("color", STATUS_COLORS[status])):
                columns[name].append(value)
            bottom += count
    return columns


def fit_counts(fig: figure, highest: float) -> None:
    """The y axis from 0 to a little above ``highest`` (room for the top bar or line)."""
    fig.y_range.update(start=0, end=max(float(highest), 1.0) * 1.05)


def set_bars(fig: figure, source: ColumnDataSource, columns: dict[str, list], x: str) -> None:
    source.data = columns
    factors = columns[x][::len(STATUSES)]
    fig.x_range.factors = factors
    fig.xaxis.major_label_orientation = 0.6 if len(factors) > 6 else 0
    fit_counts(fig, max(columns["top"], default=0))


def stacked_bars(long: pd.DataFrame, x: str, title: str) -> tuple[figure, ColumnDataSource]:
    """Counts per ``x`` stacked by status (``long`` has columns x, status, tickets); the figure and its data."""
    columns = bar_columns(long, x)
    source = ColumnDataSource(columns)
    fig = _figure(title, x_range=columns[x][::len(STATUSES)])
    bars = fig.vbar(x=x, bottom="bottom", top="top", width=0.8, color="color", source=source)
    # One legend entry per status: rows 0..4 are the first stack's segments, in STATUSES order
    # (every stack has all five), so each entry takes its colour from the right row whatever the data.
    fig.add_layout(Legend(items=[LegendItem(label=status.replace("_", " "), renderers=[bars], index=i)
                                 for i, status in enumerate(STATUSES)],
                          location="top_left", orientation="horizontal", label_text_font_size="11px",
                          ncols=3), "above")  # two rows: one row of five ran off a phone's screen
    fig.add_tools(HoverTool(renderers=[bars], tooltips=[(x.replace("_id", ""), f"@{{{x}}}"), ("status", "@status"),
                                                        ("tickets", "@tickets{0,0}")]))
    set_bars(fig, source, columns, x)
    fig.xgrid.grid_line_color = None
    return fig, source


def line_columns(by_day: pd.DataFrame) -> dict[str, list]:
    frame = by_day.reset_index().assign(day=lambda f: pd.to_datetime(f["day"]))
    return {column: frame[column].tolist() for column in frame.columns}


def set_lines(fig: figure, source: ColumnDataSource, columns: dict[str, list]) -> None:
    source.data = columns
    fig.x_range.update(start=columns["day"][0], end=columns["day"][-1])
    fit_counts(fig, max((max(columns[c], default=0) for c in LINE_COLORS), default=0))


def backlog_lines(by_day: pd.DataFrame) -> tuple[figure, ColumnDataSource]:
    columns = line_columns(by_day)
    source = ColumnDataSource(columns)
    fig = _figure("Created, resolved and open per day", x_axis_type="datetime",  # short: whole on a phone
                  x_range=Range1d())  # the days: set_lines
    for column, color in LINE_COLORS.items():
        fig.line("day", column, source=source, color=color, line_width=2, legend_label=column, name=column)
    fig.add_tools(HoverTool(tooltips=[("day", "@day{%F}"), ("created", "@created"), ("resolved", "@resolved"),
                                      ("backlog", "@backlog")], formatters={"@day": "datetime"}, mode="vline"))
    fig.legend.location = "top_left"
    fig.legend.orientation = "horizontal"
    fig.legend.label_text_font_size = "11px"
    fig.add_layout(fig.legend[0], "above")
    set_lines(fig, source, columns)
    return fig, source


#: Panel's margin around a Bokeh figure (``pn.pane.Bokeh``): the placeholders take the same room.
CHART_MARGIN = (5, 10)


def _boxes(panes: list) -> pn.FlexBox:
    """The charts side by side where the page is wide enough, one under the other on a phone."""
    return pn.FlexBox(*[pn.Column(p, min_width=300, sizing_mode="stretch_width", styles={"flex": "1 1 420px"})
                        for p in panes], gap="10px", sizing_mode="stretch_width")


class TicketCharts(StoreView):
    """Category x status bars, created/resolved/backlog lines, and (managers) wards."""

    days = param.Integer(default=TREND_DAYS, bounds=(7, 365), doc=(
        "Days of history in the backlog chart (other than the store's TREND_DAYS: a query of its own)."))

    def load(self) -> ChartData:
        store = self.store
        figures = store.figures(store.filters, self.days)
        breakdown = figures.breakdown
        return ChartData(
            by_category_status=pair_counts(breakdown, "category", "status"),
            by_day=figures.by_day,
            by_ward_status=pair_counts(breakdown, "ward_id", "status") if store.scope.sees_whole_municipality else None,
        )

    @staticmethod
    def _shape(data: ChartData) -> tuple[bool, bool | None]:
        """Which charts are notices instead: a render is only updated in place for the same shape."""
        return data.by_category_status.empty, None if data.by_ward_status is None else data.by_ward_status.empty

    def render(self, data: ChartData) -> pn.viewable.Viewable:
        panes: list = []
        self._drawn: dict[str, tuple[figure, ColumnDataSource]] = {}
        self._drawn_shape = self._shape(data)
        # An empty bar chart is left out rather than saying so: the table says "No tickets match
        # the filters." once for the page (three notices said it three times).
        if not data.by_category_status.empty:
            self._drawn["category"] = stacked_bars(data.by_category_status, "category",
                                                   "Tickets by category and status")
            panes.append(self._drawn["category"][0])
        self._drawn["day"] = backlog_lines(data.by_day)
        panes.append(self._drawn["day"][0])
        if data.by_ward_status is not None and not data.by_ward_status.empty:
            self._drawn["ward_id"] = stacked_bars(data.by_ward_status, "ward_id", "Tickets per ward")
            panes.append(self._drawn["ward_id"][0])
        return _boxes(panes)

    def placeholder(self) -> pn.viewable.Viewable:
        """A chart's space for each chart the scope has (empty ones, left out, are rare)."""
        count = 3 if self.store.scope.sees_whole_municipality else 2
        return _boxes([pn.Spacer(height=HEIGHT, sizing_mode="stretch_width", margin=CHART_MARGIN,
                                 css_classes=["opsdash-chart-pending"],
                                 styles={"background": "#f4f4f4", "border-radius": "4px"}) for _ in range(count)])

    def update(self, data: ChartData) -> bool:
        """New numbers into the figures already drawn (their data sources and axis factors only)."""
        if self._shape(data) != self._drawn_shape:
            return False
        for x, long in (("category", data.by_category_status), ("ward_id", data.by_ward_status)):
            if x in self._drawn:
                fig, source = self._drawn[x]
                set_bars(fig, source, bar_columns(long, x), x)
        set_lines(*self._drawn["day"], line_columns(data.by_day))
        return True
