"""Extra HTTP routes, loaded by ``panel serve --plugins dashboard_app.routes``.

Loading this module is also the server's start-up (``server.start``): Panel
runs nothing else of ours before it serves.
"""
from __future__ import annotations

from . import server
from .api_routes import API_ROUTES
from .logout_route import OpsDashLogoutHandler
from .export_route import EXPORT_PATH, ExportDownloadHandler
from .health_route import HealthHandler
from .live import LIVE_SCRIPT_PATH, LiveScriptHandler
from .metrics_route import METRICS_PATH, MetricsHandler
from .settings import get_settings

ROUTES = [
    (r"/health", HealthHandler, {}),
    (r"/logout", OpsDashLogoutHandler, {}),
    (EXPORT_PATH, ExportDownloadHandler, {}),  # large exports, streamed
    (LIVE_SCRIPT_PATH, LiveScriptHandler, {}),  # the page's live state and automatic recovery
    *API_ROUTES,  # the platform's HTTP API: /api/v1/ (docs/api.md)
]
if get_settings().metrics_token:  # no operator token, no metrics: the URL is a 404
    ROUTES.append((METRICS_PATH, MetricsHandler, {}))

server.start()
