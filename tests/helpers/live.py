"""Helpers for the live-event tests (bus, hub and server tests share them)."""
from __future__ import annotations

import asyncio
import json
import contextlib
import time
import uuid
from typing import AsyncIterator, Awaitable, Callable, TypeVar

import redis

from data.events import InProcessBus, RedisBus, channel_for

from .browser import browser_sign_in
from .databases import add_tickets, ticket_record
from .servers import free_port
from .services import redis_available

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait on a condition (never a fixed sleep); fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Blocking variant of ``until`` for tests that drive other processes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@contextlib.asynccontextmanager
async def started_hub(bus, engine=None, *, status: str = "live", **kwargs) -> AsyncIterator:
    """``async with started_hub(bus) as hub:`` a Hub (fast reconnects) that has reached ``status``.

    On exit, even when the body fails, the hub is stopped and the bus closed
    (each test has a bus of its own), so no task or connection outlives the test.
    """
    from data.hub import Hub

    kwargs.setdefault("base_delay", 0.05)
    kwargs.setdefault("max_delay", 0.5)
    hub = Hub(bus, engine=engine, **kwargs)
    await hub.start()
    try:
        assert await hub.wait_for_status(status, 10), hub.snapshot()
        yield hub
    finally:
        try:
            await hub.stop()
        finally:
            await bus.close()


def subscriber_connections(redis_url: str, name_prefix: str = "opsdash-hub") -> dict[str, int]:
    """Redis pub/sub connections per client name (one name per process) from CLIENT LIST."""
    client = redis.Redis.from_url(redis_url)
    try:
        counts: dict[str, int] = {}
        for entry in client.client_list(_type="pubsub"):
            name = entry.get("name", "")
            if name.startswith(name_prefix):
                counts[name] = counts.get(name, 0) + 1
        return counts
    finally:
        client.close()


def kill_subscribers(redis_url: str, client_name: str) -> int:
    """CLIENT KILL the pub/sub connections named ``client_name``: a lost connection, as the hub sees it."""
    client = redis.Redis.from_url(redis_url)
    try:
        killed = 0
        for entry in client.client_list(_type="pubsub"):
            if entry.get("name") == client_name:
                killed += int(client.execute_command("CLIENT", "KILL", "ID", entry["id"]))
        return killed
    finally:
        client.close()


def drop_connection(bus: InProcessBus | RedisBus) -> None:
    """Cut the hub's subscription the way each bus loses it in production."""
    if isinstance(bus, InProcessBus):
        bus.disconnect_all()
    else:
        assert kill_subscribers(bus.url, bus.client_name) >= 1, "no subscriber connection to kill"


def fresh_municipality() -> uuid.UUID:
    """A municipality id (hence a channel) no other test or engineer uses."""
    return uuid.uuid4()


def add_ticket(engine, municipality_id: uuid.UUID | str, ward_id: str | None, *, sensitive: bool = False,
               category: str = "water", response_deadline=None, **values) -> dict:
    """Insert one ticket (as the ticketing system would) and return its id and tracking number."""
    record = ticket_record(uuid.UUID(str(municipality_id)), ward_id=ward_id, is_sensitive=sensitive,
                           category=category, sla_response_deadline=response_deadline, **values)
    add_tickets(engine, [record])
    return {"id": record["id"], "tracking_number": record["tracking_number"]}


def ticketing_message(kind: str, ward: str | None, tracking: str, *, ward_in_data: bool = False,
                      **data) -> dict:
    """The ticketing system's own shape: {"type", "data", "ward_id"} (municipality from the channel)."""
    body = {"tracking_number": tracking, "category": "water", "status": "open", **data}
    if ward_in_data:
        body["ward_id"] = ward
        return {"type": kind, "data": body}
    return {"type": kind, "data": body, "ward_id": ward}


def make_live_store(scope, engine):
    """The session store the dashboard uses (components.store)."""
    from components.store import DashboardStore

    return DashboardStore(scope=scope, engine=engine)


def publish(redis_url: str, municipality_id, message: dict) -> None:
    """``message`` on the municipality's channel, as the ticketing system publishes (its own connection)."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.publish(channel_for(municipality_id), json.dumps(message))
    finally:
        client.close()

class LivePanelServer:
    """A Panel server in this process whose sessions get a LiveFeed wired by LiveSession."""

    def __init__(self, bus, database_url: str, municipality_id: uuid.UUID, role: str, ward: str | None) -> None:
        from data.db import get_engine
        from data.hub import Hub

        self.bus = bus
        self.engine = get_engine(database_url)
        self.hub = Hub(bus, engine=self.engine, base_delay=0.3, max_delay=1.0)
        self.municipality_id, self.role, self.ward = municipality_id, role, ward
        self.thread = None

    def app(self):
        from components.live_feed import LiveFeed
        from dashboard_app.live import LiveSession
        from data.scope import Scope

        scope = Scope(municipality_id=self.municipality_id, role=self.role, ward_id=self.ward)
        store = make_live_store(scope, self.engine)
        feed = LiveFeed(store=store)
        LiveSession(store, feed, hub=self.hub, interval_ms=100, debounce_s=0.5).start()
        return feed

    def start(self) -> None:
        import panel as pn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/app"
        # Sessions of closed clients are destroyed within ~0.2 s (Bokeh's own expiry).
        self.thread = pn.serve({"app": self.app}, port=self.port, address="127.0.0.1", threaded=True, show=False,
                               websocket_origin=[f"127.0.0.1:{self.port}"],
                               check_unused_sessions_milliseconds=100, unused_session_lifetime_milliseconds=100)
        wait_until(lambda: getattr(self.thread, "asyncio_loop", None) is not None and self._answers(),
                   what="the Panel server to answer")
        self.on_loop(self.hub.start())
        wait_until(lambda: self.hub.status == "live", what="the hub to be live")

    def _answers(self) -> bool:
        from urllib.request import urlopen

        try:
            with urlopen(f"http://127.0.0.1:{self.port}/liveness", timeout=1):
                return True
        except OSError as exc:
            return getattr(exc, "code", None) is not None  # an HTTP answer, even 404, means it is up

    def on_loop(self, coro, timeout: float = 20):
        return asyncio.run_coroutine_threadsafe(coro, self.thread.asyncio_loop).result(timeout)

    def publish(self, municipality_id: uuid.UUID, message: dict) -> None:
        import json

        self.on_loop(self.bus.publish(channel_for(municipality_id), json.dumps(message)))

    def stop(self) -> None:
        if self.thread is None:
            return
        from dashboard_app import live

        try:
            # Closed clients' sessions expire within ~0.2 s; anything left (a failed test) is closed here.
            wait_until(lambda: self.hub.session_count == 0, timeout=5, what="sessions to expire")
        except AssertionError:
            pass
        for session in list(live._sessions):
            if session.hub is self.hub:
                session.close()
        try:
            self.on_loop(self.hub.stop())
            self.on_loop(self.bus.close())
        finally:
            self.thread.stop()


class live_panel_server:
    """``with live_panel_server(bus, db_url, muni) as server:`` (stopped even when the test fails)."""

    def __init__(self, bus, database_url: str, municipality_id: uuid.UUID, role: str = "manager",
                 ward: str | None = None) -> None:
        self.server = LivePanelServer(bus, database_url, municipality_id, role, ward)

    def __enter__(self) -> LivePanelServer:
        try:
            self.server.start()
        except BaseException:
            # __exit__ does not run when __enter__ fails: stop what did start (server thread, hub).
            with contextlib.suppress(Exception):
                self.server.stop()
            raise
        return self.server

    def __exit__(self, *exc) -> None:
        self.server.stop()


# ------------------------------------------------------------------ browsers

def new_pages(browser, count: int) -> list:
    """``count`` pages, each in its own browser context (own cookies: one signed-in user each)."""
    return [browser.new_context().new_page() for _ in range(count)]


def sign_in(page, base_url: str, user: dict):
    """Sign ``user`` (a seed login) in through /login and wait for the dashboard."""
    browser_sign_in(page, base_url, user["username"], user["password"])
    return page


def wait_for_text(page, text: str, timeout: float = 30, what: str = "text") -> None:
    """Wait until ``text`` is shown anywhere on the page (shadow DOM included)."""
    from playwright.sync_api import expect

    try:
        expect(page.get_by_text(text).first).to_be_visible(timeout=timeout * 1000)
    except AssertionError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what} ({text!r}) on {page.url}") from None


def feed_text(page) -> str:
    """The live feed's table text as the user sees it."""
    return page.locator(".opsdash-live-feed table").first.inner_text()


# -------------------------------------------------------------------- Redis

REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
               "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
               "--logfile", "/var/log/redis/ci.log"]  # docs/architecture.md, "Services in development and CI"


@contextlib.contextmanager
def restarted_redis(redis_url: str):
    """Stop the Redis at 127.0.0.1:6379 for the body, then start it again (always, even on failure)."""
    import subprocess

    assert redis_url.startswith("redis://127.0.0.1:6379"), "only the local development Redis is restarted"
    client = redis.Redis.from_url(redis_url)
    try:
        client.shutdown(nosave=True)
    except (redis.ConnectionError, redis.ResponseError):
        pass  # the server closes the connection as it stops
    finally:
        client.close()
    try:
        wait_until(lambda: not redis_available(), timeout=10, what="Redis to stop")
        yield
    finally:
        if not redis_available():
            subprocess.run(REDIS_START, check=False, timeout=30)
        wait_until(redis_available, timeout=30, what="Redis to run again")


__all__ = ["add_ticket", "publish", "feed_text", "new_pages", "restarted_redis", "sign_in", "wait_for_text", "channel_for", "drop_connection", "fresh_municipality", "kill_subscribers", "live_panel_server", "make_live_store", "run", "started_hub",
           "subscriber_connections", "ticketing_message", "until", "wait_until"]
