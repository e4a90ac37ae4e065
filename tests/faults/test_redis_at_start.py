"""Redis unreachable when the server starts (issue 19, fault suite).

``OPSDASH_REDIS_URL`` names a private Redis on a loopback port that is not
running yet. The server starts, sign-in works (its throttle counts in the
process meanwhile) and the dashboard shows its figures; the live indicator
says it is reconnecting, never Live. Once that Redis starts, the page turns
Live by itself and events reach it.
"""
from __future__ import annotations

import time
import uuid

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest

from data.seed import seed

from ..helpers.browser import browser_sign_in
from ..helpers.databases import user_of
from ..helpers.faults import live_indicator, page_load_id
from ..helpers.live import add_ticket, feed_text, publish, ticketing_message, wait_until
from ..helpers.redis_server import private_redis

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis,
              pytest.mark.timeout(120)]
LIVE = "\u25cf Live"
NOT_LIVE = {"\u25cc Reconnecting", "\u25cb Live off", "\u25cc Connecting"}
#: The hub retries at most every 10 s (data/hub.py MAX_RECONNECT_DELAY_S), the page drains every 200 ms.
LIVE_WITHIN_S = 25




def test_redis_down_at_start_dashboard_works_then_turns_live_when_redis_comes(
        pg_engine, pg_url, opsdash_server, chromium_browser, random_seed):
    """Lost: nothing. Checked: every event published after Redis came up reaches the feed (each of
    three, in order), and the ticket written while live updates were off is in the table."""
    result = seed(pg_engine, tickets=60, wards=2, municipalities=1, random_seed=random_seed)
    muni = result.municipalities[0]
    ward = muni["wards"][0]
    manager = user_of(result, "manager")
    with private_redis(started=False) as redis_server:
        server = opsdash_server(pg_url, redis_url=redis_server.url, env={"OPSDASH_LIVE_INTERVAL_MS": "200"})
        page = chromium_browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        browser_sign_in(page, server.url, manager["username"], manager["password"])  # figures and table shown
        assert live_indicator(page) in NOT_LIVE, live_indicator(page)
        health = server.health()
        assert health["status"] == "ok" and health["redis"].startswith("error")
        assert health["live"]["hub"]["status"] in ("connecting", "paused")
        written_meanwhile = add_ticket(pg_engine, muni["id"], ward, tracking_number=f"OFF-{uuid.uuid4().hex[:8]}")
        time.sleep(1)
        assert live_indicator(page) in NOT_LIVE, "Live without Redis"
        loaded = page_load_id(page)

        redis_server.start()
        wait_until(lambda: live_indicator(page) == LIVE, timeout=LIVE_WITHIN_S, what="Live once Redis runs")
        # Live since the hub connected: the reconnect resync shows what was written meanwhile.
        page.locator(".tabulator-row", has_text=written_meanwhile["tracking_number"]).first.wait_for(timeout=20_000)
        events = [f"EVT{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
        for event in events:
            add_ticket(pg_engine, muni["id"], ward, tracking_number=event)
            publish(redis_server.url, muni["id"], ticketing_message("ticket_created", ward, event))
        wait_until(lambda: all(e in feed_text(page) for e in events), timeout=15, what="every event in the feed")
        assert page_load_id(page) == loaded
        assert server.health()["live"]["hub"]["status"] == "live"
        page.context.close()
        server.stop()
