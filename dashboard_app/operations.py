"""The Operations page: this process's figures (the ones ``/metrics`` gives Prometheus), for admins only.

Reached at ``./?view=operations``; the dashboard's header links to it for
admins and nobody else. ``pages.build_page`` decides from the users table
(never from the URL) whether the session may have it: anyone else gets a
"No access" page and none of the figures. The figures are process-wide and
say nothing about any municipality's tickets (counts of sessions, events,
queries, exports, sign-ins; no names, no ticket content), yet how many
sign-ins fail or which drop reasons rise is an operator's business.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from components.panel_compat import AccessibleFastListTemplate
from components.store_view import set_text, text
from data.metrics import PROCESS, figures

OPERATIONS_VIEW = "operations"
#: The read replica's lag (``OPSDASH_READ_DATABASE_URL``; no series without one).
REPLICA_LAG = "opsdash_db_replica_lag_seconds"
#: How often the open page reads the figures again.
REFRESH_MS = 5000
#: The headline figures: (title, metric, label text or None for the sum over labels).
HEADLINES = (
    ("Open sessions", "opsdash_sessions_open", None),
    ("Live events received", "opsdash_live_events_received", None),
    ("Live events delivered", "opsdash_live_events_delivered", None),
    ("Live events dropped", "opsdash_live_events_dropped", None),
    ("Sign-ins", "opsdash_sign_ins", "outcome=ok"),
    ("Failed sign-ins", "opsdash_sign_ins", "outcome=failed"),
    ("Throttled attempts", "opsdash_sign_in_throttled", None),
    ("Database connections in use", "opsdash_db_pool_in_use", None),
    ("Read replica lag (s)", REPLICA_LAG, None),
)
SECTIONS = (
    ("Sessions and live events", ("opsdash_sessions_open", "opsdash_live_")),
    ("Queries and cache", ("opsdash_query_",)),
    ("Exports", ("opsdash_export",)),
    ("Sign-in", ("opsdash_sign_in",)),
    ("Database and workers", ("opsdash_db_", "opsdash_worker_")),
)
COLUMNS = ["metric", "labels", "value", "count", "mean", "p50", "p95"]


def figures_frame() -> pd.DataFrame:
    """Every series of this process, one row each (histograms: count, mean and bucket quantiles)."""
    return pd.DataFrame(figures(), columns=COLUMNS)


def headline_text(frame: pd.DataFrame) -> str:
    parts = []
    for title, metric, labels in HEADLINES:
        rows = frame[frame["metric"] == metric]
        if labels is not None:
            rows = rows[rows["labels"] == labels]
        if metric == REPLICA_LAG:
            parts.append(f"{title}: {rows['value'].iloc[0]:.1f}" if len(rows) else f"{title}: no replica")
            continue
        value = rows["value"].fillna(0).sum()
        parts.append(f"{title}: {int(value):,}")
    return " \u00b7 ".join(parts)


def section_frame(frame: pd.DataFrame, prefixes: tuple[str, ...]) -> pd.DataFrame:
    rows = frame[frame["metric"].str.startswith(prefixes)]
    shown = rows.dropna(axis=1, how="all").reset_index(drop=True)
    return shown.round(4)


class OperationsView(pn.viewable.Viewer):
    """The figures of this server process, read again every ``REFRESH_MS`` while the page is open."""

    frame = param.DataFrame(default=None, doc="The latest reading of the figures.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._headline = text("", css_classes=["opsdash-ops-headline"], styles={"font-size": "1.1em"})
        self._tables = {title: pn.pane.DataFrame(pd.DataFrame(), index=False, sizing_mode="stretch_width",
                                                 css_classes=["opsdash-ops-table"]) for title, _ in SECTIONS}
        self.read()

    def read(self) -> None:
        frame = figures_frame()
        self.frame = frame
        set_text(self._headline, headline_text(frame))
        for title, prefixes in SECTIONS:
            self._tables[title].object = section_frame(frame, prefixes)

    def start(self) -> None:
        """In a served session: read the figures again while the page is open."""
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            pn.state.add_periodic_callback(self.read, period=REFRESH_MS)

    def __panel__(self) -> pn.viewable.Viewable:
        parts: list[Any] = [pn.pane.Markdown("## Operations"),
                            text(f"This server process ({PROCESS}); every process has its own figures. "
                                 "Prometheus reads the same from /metrics.", styles={"color": "#555"}),
                            self._headline]
        for title, _ in SECTIONS:
            parts += [pn.pane.Markdown(f"### {title}"), self._tables[title]]
        return pn.Column(*parts, sizing_mode="stretch_width", css_classes=["opsdash-operations"])


def operations_page(accent: str, meta_viewport: str, font: str) -> pn.template.BaseTemplate:
    """The Operations page as served (build it only after checking the user is an admin)."""
    view = OperationsView()
    view.start()
    header = [pn.pane.HTML('<a href="./" style="color:white">Dashboard</a>', margin=(0, 8)),
              pn.pane.HTML('<a href="./logout" style="color:white">Sign out</a>', margin=(0, 8))]
    return AccessibleFastListTemplate(title="OpsDash operations", main=[view], header=header, accent=accent,
                                        header_background=accent, meta_viewport=meta_viewport, theme_toggle=False,
                                        font=font)
