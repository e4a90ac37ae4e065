"""A slow database (issue 19, fault suite): statements stopped at the statement timeout, the page says so.

Another connection holds the summary tables the figures read (an ALTER, a
long transaction) for longer than ``OPSDASH_STATEMENT_TIMEOUT_S``. The views
keep what they show under a banner saying the database is slow; everything
that does not need those tables goes on answering: the live feed, the
heartbeat, ``/health``, a new sign-in. Once the lock goes, the page catches
up by itself.
"""
from __future__ import annotations

import json
import uuid
from urllib.request import urlopen

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest

from data.seed import seed

from ..helpers.browser import browser_sign_in, pane_texts
from ..helpers.databases import user_of
from ..helpers.faults import SUMMARY_TABLES, banner, live_indicator, locked_tables, page_load_id, wait_for_banner
from ..helpers.live import add_ticket, feed_text, publish, ticketing_message, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis,
              pytest.mark.timeout(120)]
LIVE = "\u25cf Live"
TIMEOUT_S = 2




def test_slow_database_says_slow_keeps_the_page_answering_and_catches_up(
        pg_engine, pg_url, redis_url, opsdash_server, chromium_browser, random_seed):
    """Lost: nothing. Checked: the ticket announced while the figures could not load reaches the
    feed at once and the figures once the lock goes (open tickets + 1), on the same page load."""
    result = seed(pg_engine, tickets=60, wards=2, municipalities=1, random_seed=random_seed)
    muni = result.municipalities[0]
    ward = muni["wards"][0]
    manager = user_of(result, "manager")
    server = opsdash_server(pg_url, redis_url=redis_url, env={
        "OPSDASH_LIVE_INTERVAL_MS": "200", "OPSDASH_STATEMENT_TIMEOUT_S": str(TIMEOUT_S)})
    context = chromium_browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    browser_sign_in(page, server.url, manager["username"], manager["password"])
    wait_until(lambda: live_indicator(page) == LIVE, timeout=30, what="the live indicator")
    open_before = pane_texts(page, "opsdash-kpi-value")[0]
    loaded = page_load_id(page)

    ticket = add_ticket(pg_engine, muni["id"], ward, tracking_number=f"SLOW-{uuid.uuid4().hex[:8]}")
    with locked_tables(pg_url, SUMMARY_TABLES):
        publish(redis_url, muni["id"], ticketing_message("ticket_created", ward, ticket["tracking_number"]))
        # The feed answers at once (its lookup reads the tickets, not the locked tables) ...
        wait_until(lambda: ticket["tracking_number"] in feed_text(page), timeout=15, what="the event in the feed")
        # ... and the figures' reload is stopped at the timeout: the banner says slow, the old figures stay.
        wait_for_banner(page, "slow", 30, "with the summary tables locked")
        assert pane_texts(page, "opsdash-kpi-value")[0] == open_before
        # The rest of the server answers meanwhile: heartbeats (still Live), /health, a new sign-in.
        assert live_indicator(page) == LIVE
        with urlopen(f"{server.url}/health", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read())["status"] == "ok"
        other = context.browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        browser_sign_in(other, server.url, manager["username"], manager["password"], dashboard=False)
        wait_for_banner(other, "slow", 30, "on a page opened while the database is slow")
        assert "timed out" not in banner(other).lower() and "Traceback" not in other.content()

    # The lock is gone: both pages catch up by themselves (the store's retry), no reload.
    wait_for_banner(page, None, 40, "after the lock went")
    open_after = f"{int(open_before.replace(',', '')) + 1:,}"
    wait_until(lambda: pane_texts(page, "opsdash-kpi-value")[0] == open_after, timeout=20,
               what=f"open tickets {open_after} (was {open_before})")
    page.locator(".tabulator-row", has_text=ticket["tracking_number"]).first.wait_for(timeout=20_000)
    wait_for_banner(other, None, 40, "on the second page after the lock went")
    assert page_load_id(page) == loaded
    context.close()
