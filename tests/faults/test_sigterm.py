"""SIGTERM to ``opsdash serve`` (issue 19, fault suite): what a service manager's stop or a rolling restart does.

Open pages are told the server is restarting; a streamed export already
running finishes (or, if it cannot within the grace period, gets a clear 503
and an audit row saying it failed, never a partial file); the process exits
within ``OPSDASH_SHUTDOWN_GRACE_S``.
"""
from __future__ import annotations

import csv
import io
import json
import signal
import time
from urllib.error import HTTPError
from urllib.request import urlopen

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
from sqlalchemy import select

from dashboard_app.shutdown import CUT_MESSAGE, RESTART_NOTICE
from data.models import ExportAudit
from data.seed import seed
from data.tickets import count_tickets

from ..helpers.browser import browser_sign_in
from ..helpers.databases import scope_of, user_of
from ..helpers.faults import export_in_flight, locked_tables, notices, wait_for_lock_wait
from ..helpers.live import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(120)]
GRACE_S = 8
#: What the exit may take beyond the grace period: the interpreter's own teardown, the test's polling.
EXIT_SLACK_S = 1.5


def audits(engine, username: str) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(ExportAudit.outcome, ExportAudit.channel, ExportAudit.row_count)
            .where(ExportAudit.username == username).order_by(ExportAudit.id))]


def health(server) -> tuple[int, dict]:
    try:
        with urlopen(f"{server.url}/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except HTTPError as exc:
        return exc.code, json.loads(exc.read())


def exited_within(server, seconds: float) -> float:
    """Seconds the process took to exit (fails if it has not within ``seconds``)."""
    start = time.monotonic()
    try:
        server.process.wait(seconds)
    except Exception:
        raise AssertionError(f"opsdash serve still running {seconds} s after SIGTERM:\n{server.log()}") from None
    return time.monotonic() - start


@pytest.mark.browser
def test_sigterm_tells_open_pages_lets_a_running_export_finish_and_exits_within_the_grace(
        pg_engine, pg_url, redis_url, opsdash_server, chromium_browser, random_seed):
    """Lost: nothing. Checked: the export running at SIGTERM arrives complete (every row of the
    manager's scope, audited ``ok``), and the open page got the notice before the process went."""
    result = seed(pg_engine, tickets=80, wards=2, municipalities=1, random_seed=random_seed)
    manager = user_of(result, "manager")
    rows = count_tickets(pg_engine, scope_of(pg_engine, result, "manager"))
    server = opsdash_server(pg_url, redis_url=redis_url, env={"OPSDASH_SHUTDOWN_GRACE_S": str(GRACE_S)})
    page = chromium_browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    browser_sign_in(page, server.url, manager["username"], manager["password"])

    with locked_tables(pg_url, ["tickets"]):  # the export waits at its COPY while the signal arrives
        export = export_in_flight(server, pg_engine, manager["username"], "csv")
        wait_for_lock_wait(pg_url, "COPY%")
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_until(lambda: RESTART_NOTICE in notices(page), timeout=GRACE_S / 2, what="the restart notice")
        code, body = health(server)
        assert code == 503 and body == {"status": "shutting down"}
        late = export_in_flight(server, pg_engine, manager["username"], "csv")
        status, _, message = late.result(timeout=10)
        assert status == 503 and b"restarting" in message  # no new export once stopping
    status, headers, body = export.result(timeout=GRACE_S)
    assert status == 200 and int(headers["Content-Length"]) == len(body)
    assert len(list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))) == rows + 1  # the header, every row
    assert exited_within(server, GRACE_S + EXIT_SLACK_S - (time.monotonic() - signalled)) >= 0
    assert server.process.returncode == 0, server.log()
    assert audits(pg_engine, manager["username"]) == [("ok", "http", rows)]
    page.context.close()


def test_sigterm_with_an_export_stuck_past_the_grace_answers_it_cleanly_and_exits_in_time(
        pg_engine, pg_url, opsdash_server, random_seed):
    """Lost: nothing. Checked: the export that could not finish gets a clear 503 with no attachment,
    its audit row says ``failed``, and the process does not outlive the grace period."""
    grace = 4
    result = seed(pg_engine, tickets=20, wards=1, municipalities=1, random_seed=random_seed)
    manager = user_of(result, "manager")
    server = opsdash_server(pg_url, env={"OPSDASH_SHUTDOWN_GRACE_S": str(grace)})
    with locked_tables(pg_url, ["tickets"]):  # held past the grace period
        export = export_in_flight(server, pg_engine, manager["username"], "xlsx")
        wait_for_lock_wait(pg_url, "%tickets%")
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        status, headers, body = export.result(timeout=grace + 2)
        assert status == 503 and body.decode().strip() == CUT_MESSAGE
        assert "Content-Disposition" not in headers
        exited_within(server, grace + EXIT_SLACK_S - (time.monotonic() - signalled))
    assert audits(pg_engine, manager["username"]) == [("failed", "http", 0)]
    assert "Traceback" not in server.log(20_000)
