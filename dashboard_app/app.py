"""Entry point for ``panel serve dashboard_app/app.py`` (and ``opsdash serve``)."""
from __future__ import annotations

import panel as pn

from dashboard_app.pages import serve_page

pn.extension(
    "tabulator",
    notifications=True,
    # No toast when the connection drops: the header's live indicator says Reconnecting / Offline
    # and the page recovers by itself (dashboard_app/assets/live_status.js), so "reload the page"
    # would be wrong advice.
    disconnect_notification="",
    sizing_mode="stretch_width",
)

serve_page(title="OpsDash")
