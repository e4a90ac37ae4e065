"""The platform's HTTP API on OpsDash's own Tornado server (issue 18; docs/api.md is its reference).

- ``GET /api/v1/dashboard/events``: Server-Sent Events of the process's live
  hub (``data.event_stream``); each client is a session of the hub, never a bus
  connection of its own.
- ``GET /api/v1/export/tickets/csv`` and ``.../excel``: the dashboard's
  exports, the same bytes as the buttons and ``opsdash export`` (the one
  streaming writer, ``export_route.send_export``), audited with channel ``api``.
- ``GET /api/v1/openapi.json``: the OpenAPI 3.1 document (``api_spec``).

The handlers only translate: who calls (``api_auth``), what they asked
(``data.filters.api_filters``), and errors into ``{"detail": ...}`` bodies.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
from http.client import responses

import tornado.iostream
import tornado.web

from data.errors import InvalidFilter
from data.event_stream import EventStream
from data.filters import api_filters

from .api_auth import ApiCaller, ApiRefusal, api_caller
from .api_spec import openapi_document
from .export_route import send_export
from .live import process_hub
from .settings import get_settings

log = logging.getLogger("opsdash.api")
API_PREFIX = "/api/v1"
#: Event streams one credential may hold open in one process (a script in a loop must not pile them up).
MAX_STREAMS_PER_CREDENTIAL = 10
_open_streams: collections.Counter[str] = collections.Counter()


class ApiHandler(tornado.web.RequestHandler):
    """JSON errors (``{"detail": ...}``), no caching, and the caller admitted before anything else."""

    def refuse(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        self.clear()
        self.set_status(status)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"detail": detail}))

    async def caller(self) -> ApiCaller | None:
        """The admitted caller, or None once the refusal has been answered."""
        try:
            return await api_caller(self)
        except ApiRefusal as refusal:
            if refusal.status != 401:
                log.info("API %s refused (%d): %s", self.request.path[:80], refusal.status, refusal.detail)
            self.refuse(refusal.status, refusal.detail, refusal.headers)
        except Exception:
            log.exception("could not check an API request")
            self.refuse(503, "The server could not check the request: the database is unavailable; try again shortly")
        return None

    def write_error(self, status_code: int, **kwargs) -> None:
        # Tornado's own errors (405 for another method, ...) as JSON too, never a traceback.
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"detail": responses.get(status_code, "Error")}))


class DashboardEventsHandler(ApiHandler):
    """``GET /api/v1/dashboard/events``: the caller's live events, scoped by the hub."""

    stream: EventStream | None = None
    closed = False

    async def get(self) -> None:
        caller = await self.caller()
        if caller is None:
            return
        if _open_streams[caller.credential] >= MAX_STREAMS_PER_CREDENTIAL:
            self.refuse(429, f"At most {MAX_STREAMS_PER_CREDENTIAL} event streams per credential at once; "
                             "close one first", {"Retry-After": "5"})
            return
        try:
            hub = process_hub()
        except Exception:
            log.exception("live updates unavailable for an event stream")
            self.refuse(503, "Live updates are unavailable right now; try again shortly")
            return
        settings = get_settings()
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
        self.stream = stream = EventStream(hub, caller.scope, self.request.headers.get("Last-Event-ID"))
        _open_streams[caller.credential] += 1
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + settings.api_stream_max_s
        try:
            self.write(stream.open())
            await self.flush()
            while not self.closed and (left := ends_at - loop.time()) > 0:
                chunk = await stream.next(min(settings.api_heartbeat_s, left))
                if chunk and not self.closed:
                    self.write(chunk)
                    await self.flush()  # a slow client waits here; its bounded queue fills, then `resync`
            if not self.closed:
                # After api_stream_max_s: the client reconnects (Last-Event-ID) and is checked again.
                self.finish()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            stream.close()
            _open_streams[caller.credential] -= 1
            if _open_streams[caller.credential] <= 0:
                del _open_streams[caller.credential]

    def on_connection_close(self) -> None:
        """The client went away: leave the hub now, not at the next event or heartbeat."""
        self.closed = True
        if self.stream is not None:
            self.stream.close()


class TicketExportHandler(ApiHandler):
    """``GET /api/v1/export/tickets/{csv,excel}``: the caller's tickets under the query's filters."""

    def initialize(self, fmt: str) -> None:
        self.fmt = fmt

    async def get(self) -> None:
        caller = await self.caller()
        if caller is None:
            return
        try:
            filters = api_filters(self.request.query_arguments)
        except InvalidFilter as exc:
            self.refuse(400, str(exc))
            return
        await send_export(self, caller.scope, filters, self.fmt, "api", self.refuse)


class OpenApiHandler(tornado.web.RequestHandler):
    """``GET /api/v1/openapi.json``: public, as the routes' shapes are no secret."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(openapi_document(), indent=1))


API_ROUTES = [
    (rf"{API_PREFIX}/dashboard/events", DashboardEventsHandler, {}),
    (rf"{API_PREFIX}/export/tickets/csv", TicketExportHandler, {"fmt": "csv"}),
    (rf"{API_PREFIX}/export/tickets/excel", TicketExportHandler, {"fmt": "xlsx"}),
    (rf"{API_PREFIX}/openapi\.json", OpenApiHandler, {}),
]
