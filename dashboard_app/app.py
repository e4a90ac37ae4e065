"""Entry point for ``panel serve dashboard_app/app.py`` (and ``opsdash serve``)."""
from __future__ import annotations

from dashboard_app.pages import build_page

build_page().servable(title="OpsDash")
