"""PostgreSQL restarted under open dashboards and a running export (issue 19, fault suite).

A private PostgreSQL cluster (``tests/helpers/pg_cluster.py``) is stopped and
started again on the same port while a signed-in dashboard is open and a
streamed export is reading. The page says the database could not be reached,
then shows current figures again by itself, in the same page (no reload); the
export ends with a clear error, no file, and an audit row that says it failed.
"""
from __future__ import annotations

import time
import uuid

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
from sqlalchemy import select

from data.db import get_engine, migrate
from data.models import ExportAudit
from components.store import UNAVAILABLE
from data.seed import seed

from ..helpers.browser import browser_sign_in
from ..helpers.databases import user_of
from ..helpers.faults import (banner, export_in_flight, live_indicator, locked_tables, page_load_id,
                              wait_for_banner, wait_for_lock_wait)
from ..helpers.live import add_ticket, feed_text, publish, ticketing_message, wait_until
from ..helpers.pg_cluster import pg_cluster

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis,
              pytest.mark.timeout(150)]
LIVE = "\u25cf Live"
#: The page's own backoff (components/store.py RETRY_DELAYS_S) plus a load: back well within this.
RECOVERY_S = 40


def audits(engine, username: str) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(ExportAudit.outcome, ExportAudit.channel, ExportAudit.row_count)
            .where(ExportAudit.username == username).order_by(ExportAudit.id))]


def test_postgres_restart_banner_then_recovery_without_reload_and_export_fails_cleanly_audited(
        redis_url, opsdash_server, chromium_browser, random_seed, tmp_path):
    """Lost: nothing. Checked: the page recovers in place (same page load) and shows the ticket whose
    event arrived while the database was down (the hub had to drop it), and every event published
    after the recovery reaches its feed; the export delivered no file (a 503, no attachment) and its
    audit row says ``failed``, with no audit row left waiting in the server."""
    with pg_cluster() as cluster:
        url = cluster.create_database("opsdash")
        engine = get_engine(url)
        migrate(engine)
        result = seed(engine, tickets=60, wards=2, municipalities=1, random_seed=random_seed)
        muni = result.municipalities[0]
        ward = muni["wards"][0]
        manager = user_of(result, "manager")
        server = opsdash_server(url, redis_url=redis_url, env={"OPSDASH_LIVE_INTERVAL_MS": "200"})

        page = chromium_browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        browser_sign_in(page, server.url, manager["username"], manager["password"])
        wait_until(lambda: live_indicator(page) == LIVE, timeout=30, what="the live indicator")
        loaded = page_load_id(page)
        assert banner(page) == ""

        # Written just before the restart; its event arrives while the database is down (below).
        missed = add_ticket(engine, muni["id"], ward, tracking_number=f"MISSED-{uuid.uuid4().hex[:8]}")
        # An export reading when the database goes away: held at its COPY by a lock, then cut by the stop.
        with locked_tables(url, ["tickets"]):
            export = export_in_flight(server, engine, manager["username"], "csv")
            wait_for_lock_wait(url, "COPY%")
            cluster.stop()  # "fast": every connection is closed, the lock's and the export's too
        status, headers, body = export.result(timeout=30)
        assert status == 503 and b"could not be reached" in body, (status, body[:300])
        assert "Content-Disposition" not in headers and "attachment" not in str(headers).lower()

        # Its event while the database is down: the hub cannot look the ticket up (it drops the event,
        # fail closed), so the page reloads from the database instead, which fails: the banner.
        publish(redis_url, muni["id"], ticketing_message("ticket_created", ward, missed["tracking_number"]))
        wait_for_banner(page, UNAVAILABLE[:40], 30, "with PostgreSQL stopped")
        time.sleep(2)  # a retry or two fail meanwhile: the banner stays
        assert UNAVAILABLE[:40] in banner(page)

        cluster.start()
        wait_for_banner(page, None, RECOVERY_S, "after PostgreSQL is back")
        # Nothing lost: the ticket whose event was dropped during the outage is in the table.
        page.locator(".tabulator-row", has_text=missed["tracking_number"]).first.wait_for(timeout=20_000)
        # Live events flow again, into the same page.
        event = f"EVT-{uuid.uuid4().hex[:8]}"
        add_ticket(engine, muni["id"], ward, tracking_number=event)
        deadline = time.monotonic() + 20
        while event not in feed_text(page):
            assert time.monotonic() < deadline, "an event published after the recovery never reached the feed"
            publish(redis_url, muni["id"], ticketing_message("ticket_created", ward, event))
            page.wait_for_timeout(1000)
        assert page_load_id(page) == loaded, "the page was reloaded: it should have recovered in place"

        # The failed export is written down once the database answers (the server retries every 5 s).
        wait_until(lambda: ("failed", "http", 0) in audits(engine, manager["username"]), timeout=30,
                   what="the failed export's audit row")
        assert ("ok", "http") not in {a[:2] for a in audits(engine, manager["username"])}
        assert server.health()["process"]["audits_waiting"] == 0
        page.context.close()
        server.stop()
        engine.dispose()
