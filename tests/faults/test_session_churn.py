"""200 sessions opening and closing while events flow (issue 19, fault suite): nothing stays behind.

Each session is served by Panel in this process and built from the dashboard's
own session pieces: the store, the KPI cards (their loads, ``LatestLoad``),
the live feed wired by ``LiveSession`` to the process hub on real
Redis, and the heartbeat. A client opens it (the websocket pulls the
document) and closes it; events are published all along. After each round,
once Bokeh has expired the closed sessions, what ``/health`` reports
(``live_snapshot``: live sessions, their periodic callbacks, the hub's
registrations) and the server loop's asyncio tasks are back at their level
before, no session's store survives a garbage collection, and the process's
memory does not grow from one round to the next.

(A whole ``opsdash serve`` page costs about a second of CPU to build on the
2-core test machine: 200 of them would take the fault suite's whole time
budget. ``tests/test_live_servers.py`` covers the served page's wiring.)
"""
from __future__ import annotations

import asyncio
import gc
import itertools
import random
import threading
import time
import uuid
import weakref
from urllib.request import urlopen

import panel as pn
import psutil
import pytest
from sqlalchemy import text

from components.kpis import KpiCards
from components.live_feed import LiveFeed
from dashboard_app import live
from dashboard_app.live import LiveSession, live_snapshot, start_heartbeat
from data.events import RedisBus
from data.scope import Scope
from data.seed import seed

from ..helpers.live import LivePanelServer, make_live_store, publish, ticketing_message, wait_until
from ..helpers.web import TOKEN_RE, pull_document

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(600)]  # 84 s idle, 207 s at load 9
ROUNDS = (100, 100)
WARM_UP = 10
#: Memory a round of 100 sessions may leave on top of the previous round's (allocator slack, caches
#: at their bound). A leaked dashboard session keeps far more than 250 kB: 100 of them would show.
ROUND_GROWTH_MB = 25


class DashboardSessions(LivePanelServer):
    """Sessions made of the dashboard's pieces; every store made is kept weakly, to see it go."""

    stores: weakref.WeakSet

    def app(self):
        scope = Scope(municipality_id=self.municipality_id, role=self.role, ward_id=self.ward)
        store = make_live_store(scope, self.engine)
        self.stores.add(store)
        feed = LiveFeed(store=store)
        LiveSession(store, feed, hub=self.hub, interval_ms=100, debounce_s=0.5).start()
        start_heartbeat(lambda: None, period_s=0.5)
        return pn.Column(KpiCards(store=store), feed)


def counts(server: DashboardSessions) -> dict[str, int]:
    async def tasks() -> int:
        return len(asyncio.all_tasks())

    snapshot = live_snapshot()
    return {"sessions": snapshot["sessions"], "periodic_callbacks": snapshot["periodic_callbacks"],
            "hub_sessions": server.hub.session_count, "asyncio_tasks": server.on_loop(tasks())}


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def open_and_close(server: DashboardSessions) -> None:
    """What a browser tab does: GET the page (its session is built), pull the document over the
    websocket, close it."""
    with urlopen(server.url, timeout=60) as response:
        token = TOKEN_RE.search(response.read().decode()).group(1)
    document = pull_document(server.url, {}, token, timeout=60)
    assert document.startswith("{"), document[:200]


def churn(server: DashboardSessions, sessions: int) -> None:
    for _ in range(sessions):
        open_and_close(server)


def settled(server: DashboardSessions) -> dict[str, int]:
    """The counts once every closed session has been expired (Bokeh checks every 0.1 s here)."""
    wait_until(lambda: server.hub.session_count == 0 and live_snapshot()["sessions"] == 0, timeout=30,
               what="every closed session to be expired and unregistered")
    time.sleep(1)  # the destroyed sessions' last callbacks and loads finish
    gc.collect()
    return counts(server)


def test_200_sessions_open_and_close_while_events_flow_and_nothing_stays_behind(
        pg_engine, pg_url, redis_url, random_seed):
    """Lost: nothing. Checked: every session registered with the hub was unregistered, and every
    periodic callback, asyncio task, live session and store it made is gone; memory levels off;
    the events published meanwhile reached the open sessions."""
    result = seed(pg_engine, tickets=200, wards=3, municipalities=1, random_seed=random_seed)
    muni = uuid.UUID(result.municipalities[0]["id"])
    with pg_engine.connect() as conn:
        named = [tuple(r) for r in conn.execute(text(
            "SELECT tracking_number, ward_id FROM tickets WHERE tenant_id = :m LIMIT 50"), {"m": muni})]
    bus = RedisBus(redis_url, client_name=f"opsdash-hub-churn-{uuid.uuid4().hex[:8]}")
    server = DashboardSessions(bus, pg_url, muni, "manager", None)
    server.stores = weakref.WeakSet()
    server.start()

    stop = threading.Event()
    published = itertools.count()
    rng = random.Random(random_seed)

    def events() -> None:  # the ticketing system, meanwhile: ~20 events a second
        while not stop.is_set():
            tracking, ward = rng.choice(named)
            publish(redis_url, muni, ticketing_message("ticket_updated", ward, tracking, status="in_progress"))
            next(published)
            stop.wait(0.05)

    publisher = threading.Thread(target=events, name="events", daemon=True)
    publisher.start()
    try:
        started = time.monotonic()
        churn(server, WARM_UP)  # lanes, caches and imports reach their working size
        baseline, memory = settled(server), [rss_mb()]
        # A session's objects may outlive it briefly (a callback still finishing): one or two, never
        # one per session as a leak would (100 a round here).
        kept = max(len(server.stores), 2)
        print(f"warm-up: {WARM_UP} sessions in {time.monotonic() - started:.1f} s; baseline {baseline}", flush=True)
        for sessions in ROUNDS:
            started = time.monotonic()
            churn(server, sessions)
            after = settled(server)
            memory.append(rss_mb())
            print(f"{sessions} sessions in {time.monotonic() - started:.1f} s; after {after}", flush=True)
            assert {k: after[k] for k in ("sessions", "periodic_callbacks", "hub_sessions")} == {
                "sessions": 0, "periodic_callbacks": 0, "hub_sessions": 0}, after
            # A task of the last connections' close may still be finishing (CI saw 3 against 2 once,
            # at 1 s); a leaked one never finishes, and 100 sessions would leave many.
            wait_until(lambda: counts(server)["asyncio_tasks"] <= baseline["asyncio_tasks"], timeout=10,
                       what=f"the asyncio tasks to come back to the baseline's {baseline['asyncio_tasks']}")
            assert len(server.stores) <= kept, f"{len(server.stores)} sessions' stores outlived their sessions"
    finally:
        stop.set()
        publisher.join(5)
        server.stop()
    print(f"memory MB after warm-up and each round: {[round(m, 1) for m in memory]}; "
          f"{next(published)} events published, hub counters {dict(server.hub.counters)}")
    assert server.hub.counters["delivered"] > 0, "no event reached a session: the churn ran without events"
    assert memory[-1] - memory[-2] < ROUND_GROWTH_MB, memory
    assert not [s for s in live._sessions if s.hub is server.hub]
