"""200 sessions opening and closing while events flow (issue 19, fault suite): nothing stays behind.

Each session is what a browser makes: the dashboard page (its document is
built on the GET), the websocket that pulls it, then the tab closes. Events
are published all along. After each round, once Bokeh has expired the closed
sessions, the server's own counts (``/health`` details, operator token only)
are back at their level before: live sessions, their periodic callbacks, the
hub's registrations, asyncio tasks; threads stay within the lanes' budget;
the process's memory does not grow from one round to the next.
"""
from __future__ import annotations

import itertools
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import psutil
import pytest
from sqlalchemy import text

from dashboard_app.cli.serve import CHECK_UNUSED_SESSIONS_MS, UNUSED_SESSION_LIFETIME_MS
from data.seed import seed
from data.workers import LANES

from ..helpers.databases import user_of
from ..helpers.live import publish, ticketing_message, wait_until
from ..helpers.web import page_token, pull_document, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]
ROUNDS = (100, 100)
WARM_UP = 10
PARALLEL = 6
#: Memory a round of 100 sessions may leave on top of the previous round's (allocator slack, caches
#: at their bound). A leaked dashboard session keeps ~1 MB or more: 100 of them would be far above.
ROUND_GROWTH_MB = 25
EXPIRY_S = (UNUSED_SESSION_LIFETIME_MS + CHECK_UNUSED_SESSIONS_MS) / 1000 + 15


def counts(server) -> dict[str, int]:
    details = server.health()
    live = details["live"]
    return {"sessions": live["sessions"], "periodic_callbacks": live["periodic_callbacks"],
            "hub_sessions": live["hub"]["sessions"], "asyncio_tasks": details["process"]["asyncio_tasks"],
            "threads": details["process"]["threads"]}


def rss_mb(server) -> float:
    return psutil.Process(server.process.pid).memory_info().rss / 2**20


def open_and_close(server, http) -> None:
    """One browser tab: the page (its session is built), the websocket pulling the document, closed."""
    token = page_token(http, server.url)
    assert token, "no dashboard page"
    document = pull_document(server.url, http.cookies.get_dict(), token)
    assert document.startswith("{"), document[:200]


def churn(server, http, sessions: int) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(lambda _: open_and_close(server, http), range(sessions)))


def settled(server) -> dict[str, int]:
    """The counts once every closed session has been expired (Bokeh's unused-session check)."""
    wait_until(lambda: counts(server)["hub_sessions"] == 0 and counts(server)["sessions"] == 0,
               timeout=EXPIRY_S, what="every closed session to be expired and unregistered")
    time.sleep(1)  # the last destroyed sessions' callbacks and tasks finish
    return counts(server)


def test_200_sessions_open_and_close_while_events_flow_and_nothing_stays_behind(
        pg_engine, pg_url, redis_url, opsdash_server, random_seed):
    """Lost: nothing. Checked: every session registered with the hub was unregistered, and every
    periodic callback, asyncio task and live session it made is gone; memory levels off."""
    result = seed(pg_engine, tickets=200, wards=3, municipalities=1, random_seed=random_seed)
    muni = result.municipalities[0]
    with pg_engine.connect() as conn:
        named = [tuple(r) for r in conn.execute(text(
            "SELECT tracking_number, ward_id FROM tickets WHERE tenant_id = :m LIMIT 50"), {"m": muni["id"]})]
    manager = user_of(result, "manager")
    server = opsdash_server(pg_url, redis_url=redis_url, env={"OPSDASH_LIVE_INTERVAL_MS": "200"})
    http, response = sign_in(server.url, manager["username"], manager["password"])
    assert response.status_code in (302, 303), response.status_code

    stop = threading.Event()
    published = itertools.count()
    rng = random.Random(random_seed)

    def events() -> None:  # the ticketing system, meanwhile: ~20 events a second
        while not stop.is_set():
            tracking, ward = rng.choice(named)
            publish(redis_url, muni["id"], ticketing_message("ticket_updated", ward, tracking, status="in_progress"))
            next(published)
            stop.wait(0.05)

    publisher = threading.Thread(target=events, name="events", daemon=True)
    publisher.start()
    try:
        churn(server, http, WARM_UP)  # lanes, caches and imports reach their working size
        baseline, memory = settled(server), [rss_mb(server)]
        for sessions in ROUNDS:
            churn(server, http, sessions)
            after = settled(server)
            memory.append(rss_mb(server))
            assert {k: after[k] for k in ("sessions", "periodic_callbacks", "hub_sessions")} == {
                "sessions": 0, "periodic_callbacks": 0, "hub_sessions": 0}, after
            assert after["asyncio_tasks"] <= baseline["asyncio_tasks"] + 2, (baseline, after)
            assert after["threads"] <= baseline["threads"] + sum(lane.threads for lane in LANES), (baseline, after)
    finally:
        stop.set()
        publisher.join(5)
    hub = server.health()["live"]["hub"]
    print(f"memory MB after warm-up and each round: {[round(m, 1) for m in memory]}; "
          f"{next(published)} events published, hub counters {hub['counters']}")
    assert hub["counters"].get("delivered", 0) > 0, "no event reached any session: the churn ran without events"
    assert memory[-1] - memory[-2] < ROUND_GROWTH_MB, memory
