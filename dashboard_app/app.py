"""Entry point for ``panel serve dashboard_app/app.py`` (and ``opsdash serve``)."""
from __future__ import annotations

import panel as pn

from dashboard_app.pages import serve_page

pn.extension(
    "tabulator",
    notifications=True,
    # Shown when the server goes away under an open page (restart, network),
    # instead of a page that silently stops updating.
    disconnect_notification="Connection to the server was lost. Reload the page to reconnect.",
    sizing_mode="stretch_width",
)

serve_page(title="OpsDash")
