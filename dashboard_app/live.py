"""Live events in the server: one hub per process, wired into each session.

``process_hub()`` creates the hub once per process and starts it on the
server's event loop (in demo mode the simulator too). ``LiveSession`` is the
per-session wiring: it registers the session's Scope with the hub, drains
its queue every ``OPSDASH_LIVE_INTERVAL_MS`` in a periodic async callback,
feeds the LiveFeed, refreshes the store (debounced, or at once on resync),
raises a notification per SLA breach, and removes everything it registered
when the session is destroyed. ``attach_live`` also starts the session's
heartbeat: a change the page sees every ``HEARTBEAT_S``.

The browser's side of the heartbeat is ``assets/live_status.js`` (served at
``LIVE_SCRIPT_PATH``): the header says Live only while the server's messages
arrive; a lost connection is retried with backoff and the page reloads itself
once the server answers again (issue 17).
"""
from __future__ import annotations

import asyncio
import hashlib
import html
import inspect
import logging
import threading
import time
import weakref
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable

import panel as pn
from panel.io import PeriodicCallback
from panel.io.state import set_curdoc
import tornado.web
from tornado.ioloop import IOLoop

from data.events import Event, bus_for
from data.hub import Hub
from data.metrics import PUBLISH_LATENCY, QUEUE_DEPTH
from data.simulator import Simulator
from data.workers import SHORT

from .compression import IMMUTABLE
from .settings import get_engine, get_settings

log = logging.getLogger("opsdash.live")

#: Events a session takes per tick (the hub's queue bound: a tick empties the queue,
#: so a busy municipality never makes a session fall behind by design).
DRAIN_BATCH = 2000
#: Least time between two store refreshes caused by ordinary events.
REFRESH_DEBOUNCE_S = 2.0
#: Demo simulator pace (changes a second) for `opsdash serve --demo`: a visibly moving feed.
DEMO_RATE = 1.5
#: A session's heartbeat: the page says Live only while messages reach it at least this often
#: (three missed beats and it says Reconnecting). One small message per session each time.
HEARTBEAT_S = 5.0
#: The browser's half (served by ``LiveScriptHandler``; a route of ``dashboard_app/routes.py``).
LIVE_SCRIPT_PATH = "/opsdash-live.js"
LIVE_SCRIPT = (Path(__file__).parent / "assets" / "live_status.js").read_text(encoding="utf-8").replace(
    "@HEARTBEAT_MS@", str(int(HEARTBEAT_S * 1000)))
#: The page asks for ``LIVE_SCRIPT_PATH?v=LIVE_SCRIPT_VERSION``: cached for a year, a new release a new URL.
LIVE_SCRIPT_VERSION = hashlib.sha256(LIVE_SCRIPT.encode()).hexdigest()[:12]

_lock = threading.Lock()
_hub: Hub | None = None
_tasks: list[asyncio.Task] = []
_sessions: weakref.WeakSet[LiveSession] = weakref.WeakSet()


def _server_loop() -> asyncio.AbstractEventLoop:
    return IOLoop.current().asyncio_loop  # type: ignore[attr-defined]


def process_hub() -> Hub:
    """This process's hub, created and started on first use (idempotent, thread-safe)."""
    global _hub
    with _lock:
        settings = get_settings()
        if _hub is None:
            _hub = Hub(bus_for(settings.redis_url), engine=get_engine())
        if not _tasks:
            loop = _server_loop()
            _tasks.append(loop.create_task(_hub.start(), name="opsdash-hub-start"))
            if settings.demo:  # set by `opsdash serve --demo`
                _tasks.append(loop.create_task(_run_demo_simulator(_hub), name="opsdash-demo-simulator"))
    return _hub


async def _run_demo_simulator(hub: Hub) -> None:
    try:
        simulator = await SHORT.run(Simulator, hub.engine, hub.bus)
    except Exception as exc:
        log.warning("demo simulator not started: %s", exc)
        return
    log.info("demo simulator running at %.1f changes a second", DEMO_RATE)
    await simulator.run(DEMO_RATE, None)


def hub_snapshot() -> dict[str, Any] | None:
    """The hub's counters (``Hub.snapshot``), None before it exists: what ``/metrics`` reads when scraped."""
    hub = _hub
    return hub.snapshot() if hub is not None else None


def live_snapshot() -> dict[str, Any]:
    """What /health shows about live updates (counts, never event content)."""
    hub = _hub
    return {
        "sessions": len(_sessions),
        "periodic_callbacks": sum(1 for s in list(_sessions) if s.callback is not None),
        "hub": hub.snapshot() if hub is not None else {"status": "not started"},
    }


def live_sessions() -> list[LiveSession]:
    """The live wiring of every open session of this process."""
    return list(_sessions)


async def stop_live_updates() -> None:
    """Stop this process's hub (its bus connection) and demo simulator: the server is going away."""
    for task in list(_tasks):
        if not task.done():
            task.cancel()
    hub = _hub
    if hub is not None:
        await hub.stop()
        await hub.bus.close()


def breach_message(event: Event) -> str:
    """Notification text. Escaped: the notification widget renders HTML, event fields are not ours."""
    where = f", ward {event.ward_id}" if event.ward_id else ""
    breach = event.data.get("breach")
    kind = f" ({breach} deadline)" if isinstance(breach, str) else ""
    return html.escape(f"SLA breach{kind}: {event.tracking_number} {event.category}{where}")


class LiveSession:
    """The live wiring of one browser session. ``start`` inside the session, once."""

    def __init__(self, store, feed, *, hub: Hub, interval_ms: int | None = None,
                 debounce_s: float = REFRESH_DEBOUNCE_S) -> None:
        self.store = store
        self.feed = feed
        self.hub = hub
        self.interval_ms = interval_ms or get_settings().live_interval_ms
        self.debounce_s = debounce_s
        self.registration = None
        self.callback = None
        self.doc = None
        self._dirty = False
        self._last_refresh = time.monotonic()
        self._trailing_due: float | None = None
        self._ticking = False

    def start(self) -> LiveSession:
        # Kept to speak to this session from outside it (``announce``: the server is restarting).
        self.doc = pn.state.curdoc
        self.registration = self.hub.register(self.store.scope)
        self._set_status(self.hub.status)
        # Results stay shared while the hub has seen no change of this municipality.
        self.store.change_mark = partial(self.hub.change_mark, self.store.scope.municipality_id)
        # A background callback: Panel would otherwise flag the whole server "busy" (spinner,
        # a process-wide busy list rewritten per call) twice a second per session, and log
        # each run. ``pn.state.add_periodic_callback`` takes no ``background`` (Panel 1.9, 1.10),
        # so the callback is made directly; it stops with the session (``close`` below, and
        # Bokeh drops a destroyed document's callbacks).
        self.callback = PeriodicCallback(callback=self.tick, period=self.interval_ms, background=True, log=False)
        self.callback.start()
        # Bokeh stops the callback only when it expires the session; unregister
        # here too so a closed tab leaves nothing behind in the hub.
        pn.state.on_session_destroyed(self.close)
        _sessions.add(self)
        return self

    def close(self, *_session_context) -> None:
        """Idempotent: runs on session destruction (and may run again on server stop)."""
        if self.callback is not None:
            try:
                self.callback.stop()
            except Exception:  # already stopped by Bokeh's own cleanup
                pass
            self.callback = None
        if self.registration is not None:
            self.hub.unregister(self.registration)
            self.registration = None
            self.store.change_mark = None
        _sessions.discard(self)

    def _set_status(self, status: str) -> None:
        mapped = {"stopped": "off"}.get(status, status)
        if getattr(self.store, "live_status", None) != mapped:
            self.store.live_status = mapped

    async def _refresh(self, *, trailing: bool = False) -> None:
        self._dirty = False
        self._last_refresh = time.monotonic()
        # The store serves identical queries from a short result cache, so a refresh right
        # after a change may still read the previous answer; one more refresh once that
        # cache has turned over makes the session converge to the database.
        ttl = float(getattr(self.store, "cache_ttl_s", 0) or 0)
        self._trailing_due = None if trailing or ttl <= 0 else self._last_refresh + ttl
        result = self.store.refresh()
        if inspect.isawaitable(result):
            await result

    async def tick(self) -> None:
        if self.registration is None or self._ticking:
            return
        self._ticking = True  # a slow refresh must not let ticks pile up
        try:
            QUEUE_DEPTH.observe(len(self.registration))
            drained = self.registration.drain(DRAIN_BATCH)
            self._set_status(drained.status)
            if drained.events:
                observe_latency(drained.events)
                self.feed.add(drained.events)
                self._notify(drained.events)
                self._dirty = True
            if getattr(self.store, "error", ""):
                # The database failed the last loads: reload on the store's backoff, not on every
                # event (a reload that succeeds is a full resync; one that fails keeps the banner).
                self._dirty = self._dirty or drained.resync
                self.store.auto_retry()
            elif drained.resync:
                await self._refresh()  # events were missed: reload from the database now
            elif self._dirty and time.monotonic() - self._last_refresh >= self.debounce_s:
                await self._refresh()
            elif self._trailing_due is not None and time.monotonic() >= self._trailing_due:
                await self._refresh(trailing=True)
        except Exception:  # a bad tick must not kill the session's live updates
            log.exception("live update tick failed")
        finally:
            self._ticking = False

    def announce(self, message: str) -> None:
        """Show ``message`` (fixed text of ours) on this session's page until it closes; from any code on the
        server's event loop."""
        doc = self.doc
        if doc is None or doc.session_context is None:
            return

        def show() -> None:
            with set_curdoc(doc):  # the session's own notification area
                notifications = pn.state.notifications
            if notifications is not None:
                notifications.warning(html.escape(message), duration=0)  # 0: stays until the page goes

        doc.add_next_tick_callback(show)  # under the document's lock, as Bokeh requires

    def _notify(self, events: list[Event]) -> None:
        notifications = pn.state.notifications
        if notifications is None:
            return
        breaches = [e for e in events if e.type == "sla_breach"]
        for event in breaches[:3]:  # a burst of breaches is one glance, not a wall of toasts
            notifications.warning(breach_message(event), duration=8000)
        if len(breaches) > 3:
            notifications.warning(f"{len(breaches) - 3} more SLA breaches", duration=8000)


def observe_latency(events: list[Event], now: datetime | None = None) -> None:
    """Publish-to-session latency of drained events: from each one's ``occurred_at``.

    An event without ``occurred_at`` got its arrival at the hub as one
    (``data.events``), so for those this is the hub-to-session part only. A
    publisher whose clock runs ahead would give negative times: counted as 0.
    """
    now = now or datetime.now(timezone.utc)
    for event in events:
        PUBLISH_LATENCY.observe(max(0.0, (now - event.occurred_at).total_seconds()))


def attach_live(store, feed, heartbeat: Callable[[], None] | None = None) -> LiveSession | None:
    """Wire live updates into the current session; None (and the feed says off) when impossible.

    ``heartbeat`` changes something the page shows (``Dashboard.live_indicator``'s beat), so the
    browser sees a message at least every ``HEARTBEAT_S``.
    """
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        # Not a served session (a notebook): no periodic callbacks, no hub.
        store.live_status = "off"
        return None
    if heartbeat is not None:
        # Whether or not live updates start: a page without beats would take itself for cut off.
        start_heartbeat(heartbeat)
    try:
        return LiveSession(store, feed, hub=process_hub()).start()
    except Exception:
        log.exception("live updates unavailable for this session")
        store.live_status = "off"
        return None


def start_heartbeat(beat: Callable[[], None], period_s: float = HEARTBEAT_S) -> PeriodicCallback:
    """Call ``beat`` every ``period_s`` for the current session's lifetime (the browser cannot
    tell a quiet feed from a dead socket, so the server speaks even when nothing happens)."""
    # In the background and unlogged, as LiveSession's tick (see there); Bokeh drops the
    # callback with the session's document.
    callback = PeriodicCallback(callback=beat, period=int(period_s * 1000), background=True, log=False)
    callback.start()
    return callback


class LiveScriptHandler(tornado.web.RequestHandler):
    """``LIVE_SCRIPT_PATH``: the page's live-state script, from this server (CSP: scripts from 'self')."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        # The page's URL carries this script's version: nothing to ask again on a metered link.
        # Any other URL revalidates (Tornado's ETag makes that a 304), so it is never stale.
        versioned = self.get_query_argument("v", "") == LIVE_SCRIPT_VERSION
        self.set_header("Cache-Control", IMMUTABLE if versioned else "no-cache")
        self.finish(LIVE_SCRIPT)
