"""``/health``: whether the database (and Redis, when configured) answer; details for the operator only."""
from __future__ import annotations

import asyncio
import hmac
import json
import threading

import tornado.web
from sqlalchemy import text

from data import workers
from data.audit import pending_count
from data.errors import DatabaseBusy
from data.redis_nodes import parse_redis_url, sync_client

from .live import live_snapshot
from .log_format import RequestContext
from .shutdown import shutting_down
from .settings import get_engine, get_read_route, get_settings
from .web_session import REVOCATIONS


def health_status() -> tuple[int, dict]:
    """Database and Redis status; 200 when the database answers."""
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
        status["live_bus"] = parse_redis_url(settings.redis_url).bus_name
        try:
            client = sync_client(settings.redis_url, timeout_s=1)
            client.ping()
            client.close()
            status["redis"] = "ok"
        except Exception as exc:
            status["redis"] = f"error: {type(exc).__name__}"
    # Configured, lag in seconds, where reads went: a lagging replica is no fault (the primary answers).
    status["read_replica"] = get_read_route().snapshot()
    status["live"] = live_snapshot()  # hub counters by drop reason, sessions, callbacks
    status["sign_outs"] = {"pages_watched": REVOCATIONS.watched, "pages_ended": REVOCATIONS.ended}
    status["workers"] = workers.snapshot()  # per lane of database work: threads, running, queued, refused
    status["status"] = "ok" if code == 200 else "degraded"
    return code, status


def operator_token_given(authorization: str | None) -> bool:
    """Whether ``Authorization: Bearer <OPSDASH_METRICS_TOKEN>`` was sent (never, when no token is set)."""
    expected = get_settings().metrics_token
    scheme, _, given = (authorization or "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                                  expected.encode())


class HealthHandler(RequestContext, tornado.web.RequestHandler):
    """``/health``: ``ok``/``degraded`` for anyone; the details only for the operator token.

    The details (hub counters, drops by reason) would tell an outsider when
    sensitive-category events arrive, so the public answer is the status alone.
    """

    async def get(self) -> None:
        try:
            code, status = await workers.SHORT.run(health_status)
        except DatabaseBusy:  # every short-lane thread busy for its whole wait: that is the answer
            code, status = 503, {"status": "degraded", "database": "busy"}
        if shutting_down():  # a load balancer stops sending people here; open pages are told already
            code, status["status"] = 503, "shutting down"
        # Counted on the event loop itself: what must return to its level after sessions close.
        status["process"] = {"asyncio_tasks": len(asyncio.all_tasks()), "threads": threading.active_count(),
                             "audits_waiting": pending_count()}
        if not operator_token_given(self.request.headers.get("Authorization")):
            status = {"status": status["status"]}
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(status))
