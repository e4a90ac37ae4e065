"""Extra HTTP routes, loaded by ``panel serve --plugins dashboard_app.routes``."""
from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging

import tornado.web
from panel.auth import LogoutHandler
from sqlalchemy import text

from . import panel_fence

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


def operator_token_given(authorization: str | None) -> bool:
    """Whether ``Authorization: Bearer <OPSDASH_METRICS_TOKEN>`` was sent (never, when no token is set)."""
    from .settings import get_settings

    expected = get_settings().metrics_token
    scheme, _, given = (authorization or "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                                  expected.encode())


class HealthHandler(tornado.web.RequestHandler):
    """``/health``: ``ok``/``degraded`` for anyone; the details only for the operator token.

    The details (hub counters, drops by reason) would tell an outsider when
    sensitive-category events arrive, so the public answer is the status alone.
    """

    async def get(self) -> None:
        code, status = await asyncio.to_thread(health_status)
        if not operator_token_given(self.request.headers.get("Authorization")):
            status = {"status": status["status"]}
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(status))


class OpsDashLogoutHandler(LogoutHandler):
    """``/logout``: ends the session record (so a copy of the cookie opens nothing), then Panel's sign-out."""

    async def get(self) -> None:
        from data.web_sessions import revoke_session

        from .settings import get_engine
        from .web_session import SESSION_COOKIE, signed_cookie

        session_id = signed_cookie(self.get_secure_cookie, SESSION_COOKIE)
        if session_id:
            try:
                await asyncio.to_thread(revoke_session, get_engine(), session_id)
            except Exception:  # the cookies still go; the record expires on its own
                log.warning("sign-out: could not end the session record (database unavailable)")
        self.clear_cookie(SESSION_COOKIE)
        self.clear_cookie("next_url")
        self.set_header("Cache-Control", "no-store")
        super().get()


def _use_opsdash_cookie_secret() -> None:
    """The cookie secret reaches Panel from the environment (``OPSDASH_COOKIE_SECRET``), never argv.

    Panel checks that it has one only after loading this plugin, so ``panel serve ...
    --plugins dashboard_app.routes`` needs no ``--cookie-secret`` (which any local user could read in
    the process list).
    """
    from panel.config import config

    from .settings import get_settings

    secret = get_settings().cookie_secret
    if secret and not config.cookie_secret:
        config.cookie_secret = secret


if logging.getLogger("opsdash").level == logging.NOTSET:
    # Sign-ins, refusals and the route table are what an operator reads the server log for.
    logging.getLogger("opsdash").setLevel(logging.INFO)
panel_fence.install()
_use_opsdash_cookie_secret()
ROUTES = [(r"/health", HealthHandler, {}), (r"/logout", OpsDashLogoutHandler, {})]

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
        from panel.config import config

        from .web_session import session_lifetime

        # Panel checks a cookie's age against its own --oauth-expiry-days; ours is the session's.
        config.oauth_expiry = session_lifetime().total_seconds() / 86400
        try:
            process_hub()
        except Exception:  # the first session tries again (and its page says live updates are off)
            log.exception("could not start live updates at server start")

    IOLoop.current().add_callback(start)


_connect_live_updates_when_serving()
