"""Charts of the filtered, scoped set: by category and status, backlog over time, per ward.

Every figure comes from an SQL aggregate in ``data.tickets``; no rows are
loaded. Labels are ours or controlled vocabulary (categories, statuses, ward
ids validated by the data layer), and Bokeh draws them as text on a canvas.
"""
from __future__ import annotations

from dataclasses import dataclass

import hvplot.pandas  # noqa: F401  (registers .hvplot on pandas objects)
import pandas as pd
import panel as pn
import param

from data.tickets import counts_by_pair, created_and_resolved_by_day

from .store_view import StoreView, notice

NO_TICKETS = "No tickets match the filters."
#: One colour per status in every chart, so a glance across charts agrees.
STATUS_COLORS = {"open": "#e0a030", "in_progress": "#1f77b4", "escalated": "#b3261e",
                 "resolved": "#2e7d32", "closed": "#8c8c8c"}


@dataclass(frozen=True)
class ChartData:
    by_category_status: pd.DataFrame
    by_day: pd.DataFrame
    by_ward_status: pd.DataFrame | None  # None: this scope is one ward (councillor)


class TicketCharts(StoreView):
    """Category x status bars, created/resolved/backlog lines, and (managers) wards."""

    days = param.Integer(default=30, bounds=(7, 365), doc="Days of history in the backlog chart.")

    def load(self) -> ChartData:
        store = self.store
        engine, scope, filters = store.engine, store.scope, store.filters
        wards = None
        if scope.sees_whole_municipality:
            wards = counts_by_pair(engine, scope, "ward_id", "status", filters)
        return ChartData(
            by_category_status=counts_by_pair(engine, scope, "category", "status", filters),
            by_day=created_and_resolved_by_day(engine, scope, filters, days=self.days),
            by_ward_status=wards,
        )

    def render(self, data: ChartData) -> pn.viewable.Viewable:
        common = dict(responsive=True, height=300, legend="top", toolbar=None)
        if data.by_category_status.empty:
            category = notice(NO_TICKETS)
        else:
            category = data.by_category_status.hvplot.bar(
                x="category", y="tickets", by="status", stacked=True, rot=30, cmap=STATUS_COLORS,
                title="Tickets by category and status", xlabel="", ylabel="tickets", **common,
            )
        by_day = data.by_day.reset_index()
        by_day["day"] = pd.to_datetime(by_day["day"])
        backlog = by_day.hvplot.line(
            x="day", y=["created", "resolved", "backlog"], color=["#1f77b4", "#2e7d32", "#333333"], title="Created, resolved and open backlog per day",
            xlabel="", ylabel="tickets", **common,
        )
        panes = [pn.panel(category, sizing_mode="stretch_width"), pn.panel(backlog, sizing_mode="stretch_width")]
        if data.by_ward_status is not None:
            if data.by_ward_status.empty:
                panes.append(notice(NO_TICKETS))
            else:
                wards = data.by_ward_status.copy()
                wards["ward_id"] = wards["ward_id"].fillna("(no ward)")
                panes.append(pn.panel(wards.hvplot.bar(
                    x="ward_id", y="tickets", by="status", stacked=True, rot=30, cmap=STATUS_COLORS,
                    title="Tickets per ward", xlabel="", ylabel="tickets", **common,
                ), sizing_mode="stretch_width"))
        return pn.FlexBox(*[pn.Column(p, min_width=320, sizing_mode="stretch_width",
                                      styles={"flex": "1 1 420px"}) for p in panes],
                          gap="10px", sizing_mode="stretch_width")
