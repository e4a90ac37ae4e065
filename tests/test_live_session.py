"""Per-session live wiring in a real Panel server (in this process), driven by Bokeh client sessions."""
from __future__ import annotations

import collections
import contextlib
import gc
import html
import logging
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import panel as pn
import psutil
import pytest
from bokeh.client import pull_session

from components.live_feed import LiveFeed
from dashboard_app import live
from data.events import make_event

from data.db import get_engine

from .helpers.live import (
    add_ticket,
    drop_connection,
    fresh_municipality,
    live_panel_server,
    make_live_store,
    ticketing_message,
    wait_until,
)


TEN_THIRTY_UTC = datetime(2026, 3, 1, 10, 30, tzinfo=timezone.utc)


@contextlib.contextmanager
def one_live_session(server):
    """A Bokeh client session on ``server``; yields its server-side LiveSession once live."""
    client = pull_session(url=server.url)
    try:
        wait_until(lambda: len(live._sessions) == 1, what="the session to register")
        (session,) = list(live._sessions)
        wait_until(lambda: session.store.live_status == "live", what="live status")
        yield session
    finally:
        client.close()


def test_feed_shows_scoped_events_newest_first_as_escaped_text(live_bus, sqlite_url):
    muni = fresh_municipality()
    engine = get_engine(sqlite_url)
    tag = uuid.uuid4().hex[:6]
    hostile = f"<img src=x onerror=alert({tag})>"
    other, no_ward, first, markup = (add_ticket(engine, muni, ward, tracking_number=number)["tracking_number"]
                                     for ward, number in (("W2", f"other-{tag}"), (None, f"none-{tag}"),
                                                          ("W1", f"first-{tag}"), ("W1", hostile)))
    with live_panel_server(live_bus, sqlite_url, muni, role="ward_councillor", ward="W1") as server:
        with one_live_session(server) as session:
            server.publish(muni, ticketing_message("ticket_created", "W2", other))
            server.publish(muni, ticketing_message("ticket_created", None, no_ward))
            server.publish(muni, ticketing_message("ticket_created", "W1", first, status="in_progress"))
            server.publish(muni, make_event("ticket_updated", muni, ward_id="W1", occurred_at=TEN_THIRTY_UTC, data={
                "tracking_number": markup, "category": "water", "status": "<b>open</b>",
            }).to_dict())
            wait_until(lambda: session.feed.received == 2, what="two events in the feed")
            rows = session.feed.rows
            assert [r[2] for r in rows] == [markup, first]  # newest first
            assert rows[1][1] == "created" and rows[1][4] == "W1" and rows[1][5] == "in progress"
            assert rows[0][0] == "2026-03-01 12:30:00"  # 10:30 UTC in the municipality's zone (SAST)

            # The markup the browser puts in the page.
            def rendered() -> str:
                return session.feed.html

            wait_until(lambda: first in rendered(), what="the feed model to update")
            assert "<img src=x" not in rendered() and html.escape(markup) in rendered()
            assert "<b>open" not in rendered()


def test_breach_notification_text_is_escaped():
    event = make_event("sla_breach", uuid.uuid4(), ward_id="W<1>",
                       data={"tracking_number": "<script>x</script>", "category": "roads", "breach": "response"})
    text = live.breach_message(event)
    assert "<script>" not in text and "&lt;script&gt;" in text and "response deadline" in text


def test_lost_bus_shows_paused_then_resyncs_the_store(live_bus, sqlite_url):
    muni = fresh_municipality()
    with live_panel_server(live_bus, sqlite_url, muni) as server:
        with one_live_session(server) as session:
            # Every change, as it happens (on the server's thread): a paused state that lasts a
            # few hundred milliseconds is seen without polling for it.
            statuses: list[str] = []
            shown: list[str] = []
            session.store.param.watch(lambda event: statuses.append(event.new), "live_status")
            session.feed._status.param.watch(lambda event: shown.append(event.new), "object")
            version = session.store.data_version
            drop_connection(live_bus)
            wait_until(lambda: session.store.data_version > version, what="a resync after reconnecting")
            wait_until(lambda: server.hub.status == session.store.live_status == "live", what="live again")
            assert statuses == ["paused", "live"]
            # What the feed's status line said, as the user reads it.
            assert shown == ["Live updates paused, reconnecting...", "\u25cf Live"]


def test_session_results_stay_shared_until_its_municipality_announces_a_change(live_bus, sqlite_url):
    muni, other = fresh_municipality(), fresh_municipality()
    mine = add_ticket(get_engine(sqlite_url), muni, "W1")
    with live_panel_server(live_bus, sqlite_url, muni, role="ward_councillor", ward="W1") as server:
        with one_live_session(server) as session:
            store = session.store
            mark = store.change_mark()
            assert mark is not None
            server.publish(other, ticketing_message("ticket_created", "W1", "elsewhere"))
            server.publish(muni, ticketing_message("ticket_created", "W2", "not-for-this-councillor"))
            wait_until(lambda: store.change_mark() != mark, what="the mark to move")
            server.publish(muni, ticketing_message("ticket_created", "W1", mine["tracking_number"]))
            wait_until(lambda: session.feed.received == 1, what="the event in the feed")
            assert store.change_mark()[1] == mark[1] + 2  # the other municipality moved nothing
        wait_until(lambda: store.change_mark is None, what="the mark to go with the session")


def test_resync_refreshes_again_once_the_result_cache_turned_over(live_bus, sqlite_url):
    muni = fresh_municipality()
    with live_panel_server(live_bus, sqlite_url, muni) as server:
        with one_live_session(server) as session:
            session.store.cache_ttl_s = 0.5  # the dashboard's shared result cache, shortened
            version = session.store.data_version
            session.registration.mark_resync()
            wait_until(lambda: session.store.data_version >= version + 2, what="the resync and its trailing refresh")
            settled = session.store.data_version
            time.sleep(1.5)  # three cache periods: no further refreshes without new events
            assert session.store.data_version == settled == version + 2


def test_bursts_of_events_refresh_the_store_debounced(live_bus, sqlite_url):
    muni = fresh_municipality()
    with live_panel_server(live_bus, sqlite_url, muni) as server:
        with one_live_session(server) as session:
            version = session.store.data_version
            for i in range(40):
                server.publish(muni, ticketing_message("ticket_updated", "W1", f"burst-{i}"))
            wait_until(lambda: session.feed.received == 40, what="all forty events in the feed")
            wait_until(lambda: session.store.data_version > version, what="a refresh")
            assert session.store.data_version - version <= 2  # debounced, not one per event


def test_failing_refresh_does_not_stop_live_updates(live_bus, sqlite_url, caplog):
    muni = fresh_municipality()
    with live_panel_server(live_bus, sqlite_url, muni) as server:
        with one_live_session(server) as session:
            session.registration.mark_resync()
            original = session.store.refresh
            session.store.refresh = lambda: 1 / 0
            with caplog.at_level(logging.ERROR, logger="opsdash.live"):
                wait_until(lambda: "live update tick failed" in caplog.text, what="the logged failure")
            session.store.refresh = original
            server.publish(muni, ticketing_message("ticket_created", "W1", "still-live"))
            wait_until(lambda: session.feed.received >= 1, what="events after the failure")


@pytest.mark.slow
def test_thousand_session_open_close_cycles_leave_nothing_behind(sqlite_url):
    from data.events import InProcessBus

    bus = InProcessBus()
    muni = fresh_municipality()
    process = psutil.Process()
    with live_panel_server(bus, sqlite_url, muni) as server:

        def cycles(n: int) -> None:
            # Clients in another process: Bokeh's client keeps each closed websocket object
            # alive, which would hide the server's own memory behind the client's.
            script = f"import panel\nfrom bokeh.client import pull_session\nfor _ in range({n}): pull_session(url={server.url!r}).close()"
            done = subprocess.run([sys.executable, "-c", script], timeout=600, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-2000:]

        def instances() -> dict[str, int]:
            gc.collect()
            names = {"LiveSession", "LiveFeed", "SessionFeed", "DashboardStore", "ServerSession"}
            return dict(collections.Counter(type(o).__name__ for o in gc.get_objects() if type(o).__name__ in names))

        def nothing_left() -> bool:
            return (server.hub.session_count == 0 and len(live._sessions) == 0
                    and sum(len(cbs) for cbs in pn.state._periodic.values()) == 0)

        cycles(100)  # warm-up: caches, first imports
        wait_until(nothing_left, what="the warm-up sessions to be destroyed")
        gc.collect()
        # Objects other tests of this process left (views built outside any session) are
        # not this test's business: what the cycles leave is.
        already = instances()
        rss_before = process.memory_info().rss
        cycles(900)
        wait_until(nothing_left, timeout=30, what="every session to be destroyed")
        gc.collect()
        grown_mb = (process.memory_info().rss - rss_before) / 2**20
        assert server.hub.session_count == 0 and server.hub._sessions == {}
        assert instances() == already
        assert grown_mb < 15, f"memory grew by {grown_mb:.1f} MB over 900 sessions"
        assert bus.subscriber_count == 1  # still one subscription for the process


def test_feed_lines_belong_to_their_event_even_when_a_publisher_reuses_ids():
    from data.events import parse_event

    muni = fresh_municipality()
    first = parse_event({"id": "same", "type": "ticket_created", "municipality_id": str(muni), "ward_id": "W1",
                         "data": {"tracking_number": "ONE"}})
    second = parse_event({"id": "same", "type": "ticket_created", "municipality_id": str(muni), "ward_id": "W2",
                          "data": {"tracking_number": "<i>TWO</i>"}})
    feed = LiveFeed()
    feed.add([first])
    feed.add([second])
    assert [(r[2], r[4]) for r in feed.rows] == [("<i>TWO</i>", "W2"), ("ONE", "W1")]
    assert "<i>" not in feed._html() and "&lt;i&gt;TWO" in feed._html()
