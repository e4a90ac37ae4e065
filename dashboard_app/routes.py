"""Extra HTTP routes, loaded by ``panel serve --plugins dashboard_app.routes``."""
from __future__ import annotations

import gc
import json
import logging

import tornado.web
from sqlalchemy import text

log = logging.getLogger("opsdash.routes")


def health_status() -> tuple[int, dict]:
    """Database and Redis status; 200 when the database answers."""
    from .settings import get_engine, get_settings

    settings = get_settings()
    status: dict = {"database": "ok", "redis": "not configured", "live_bus": "in-process"}
    code = 200
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # report, never raise
        status["database"] = f"error: {type(exc).__name__}"
        code = 503
    if settings.redis_url:
        status["live_bus"] = "redis"
        try:
            import redis

            client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
            client.ping()
            client.close()
            status["redis"] = "ok"
        except Exception as exc:
            status["redis"] = f"error: {type(exc).__name__}"
    from .live import live_snapshot  # hub counters by drop reason, sessions, callbacks

    status["live"] = live_snapshot()
    status["status"] = "ok" if code == 200 else "degraded"
    return code, status


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        code, status = health_status()
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(status))


ROUTES = [(r"/health", HealthHandler, {})]

from .export_route import EXPORT_PATH, ExportDownloadHandler  # noqa: E402  (issue 5: large exports)

ROUTES.append((EXPORT_PATH, ExportDownloadHandler, {}))

# Loaded once at server start: import the page's modules now (pandas, SQLAlchemy, the
# views: ~0.8 s), so the first person to sign in after a restart does not wait for them.
from . import pages  # noqa: E402,F401

# What is alive now (modules, classes, Panel's and Bokeh's registries: ~230,000 objects) lives
# as long as the process. Frozen, the garbage collector stops scanning it over and over: its
# full collections during sign-ins measured 130-250 ms each, 35-80 ms after the freeze.
gc.collect()
gc.freeze()


def _connect_live_updates_when_serving() -> None:
    """Start this process's live hub as soon as the server's event loop runs.

    Started by the first sign-in instead, the hub was not yet live when that
    sign-in loaded its figures: they were cached without a change mark
    (components.query_cache), so the next manager signing in a few seconds
    later ran every query again. It also spares the first sign-in the Redis
    connection.
    """
    from tornado.ioloop import IOLoop

    from .live import process_hub

    def start() -> None:
        try:
            process_hub()
        except Exception:  # the first session tries again (and its page says live updates are off)
            log.exception("could not start live updates at server start")

    IOLoop.current().add_callback(start)


_connect_live_updates_when_serving()
