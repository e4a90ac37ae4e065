"""Entry point for ``panel serve dashboard_app/app.py`` (and ``opsdash serve``)."""
from __future__ import annotations

import panel as pn

from dashboard_app.pages import serve_page

pn.extension(
    "tabulator",
    notifications=True,
    # Shown when the connection drops; the page recovers by itself (the header's indicator and
    # dashboard_app/assets/live_status.js), so it must not ask for a reload. Never empty: Panel
    # 1.9's handler then throws inside BokehJS's connection_lost dispatch, and the callbacks after
    # it (the live-state script's) never run.
    disconnect_notification="Connection to the server was lost. Reconnecting by itself\u2026",
    sizing_mode="stretch_width",
)

serve_page(title="OpsDash")
