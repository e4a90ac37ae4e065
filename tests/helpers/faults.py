"""The fault suite's tools (tests/faults/): table locks, streamed exports in flight, what a page shows."""
from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from datetime import timedelta
from typing import Iterator, Sequence
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import Request, urlopen

import psycopg
import tornado.web
from sqlalchemy.engine import make_url

from data.export_token import sign_export_token
from data.filters import TicketFilters

from .browser import pane_texts
from .live import wait_until
from .servers import OpsDashServer

#: The summary tables the dashboard's figures read on PostgreSQL (migration 0009).
SUMMARY_TABLES = ("ticket_summary_cells", "ticket_summary_days", "ticket_summary_deadlines",
                  "ticket_summary_responses", "ticket_summary_zones", "ticket_summary_marks",
                  "ticket_summary_ahead")


def dsn(database_url: str) -> str:
    """A psycopg connection string for an OpsDash (SQLAlchemy) PostgreSQL URL."""
    url = make_url(database_url)
    return f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"


@contextlib.contextmanager
def locked_tables(database_url: str, tables: Sequence[str]) -> Iterator[psycopg.Connection]:
    """Another connection holds ``tables`` in ACCESS EXCLUSIVE mode (every read waits) for the body."""
    conn = psycopg.connect(dsn(database_url), connect_timeout=5)
    try:
        conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        yield conn
    finally:
        with contextlib.suppress(psycopg.Error):  # a restarted server has closed it already
            conn.rollback()
        conn.close()


def waiting_on_locks(database_url: str, like: str = "%") -> int:
    """OpsDash statements (``application_name = 'opsdash'``) waiting for a lock, whose text is LIKE ``like``."""
    with psycopg.connect(dsn(database_url), autocommit=True, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'opsdash' "
                            "AND wait_event_type = 'Lock' AND query LIKE %s", (like,)).fetchone()[0]


def signed_cookie_header(server: OpsDashServer, engine, username: str) -> str:
    """The cookies a signed-in browser sends: a fresh session record and Panel's signed ``user`` cookie."""
    from data.web_sessions import start_session

    signed = {"user": username, "opsdash_session": start_session(engine, username, timedelta(hours=1))}
    return "; ".join(f"{name}={tornado.web.create_signed_value(server.cookie_secret, name, value).decode()}"
                     for name, value in signed.items())


def export_in_flight(server: OpsDashServer, engine, username: str, fmt: str = "csv",
                     filters: TicketFilters = TicketFilters(), timeout: float = 90) -> Future:
    """GET a streamed export (``/export/download``) in a thread; a Future of (status, headers, body).

    A connection the server closes before the body is complete gives status None and the error's name.
    """
    token = sign_export_token(server.cookie_secret, username, fmt, filters)
    request = Request(f"{server.url}/export/download?token={quote(token)}",
                      headers={"Cookie": signed_cookie_header(server, engine, username)})
    result: Future = Future()

    def fetch() -> None:
        try:
            with urlopen(request, timeout=timeout) as response:
                result.set_result((response.status, dict(response.headers), response.read()))
        except HTTPError as exc:
            result.set_result((exc.code, dict(exc.headers), exc.read()))
        except Exception as exc:  # cut off: the client sees an incomplete answer, never a file
            result.set_result((None, {}, type(exc).__name__.encode()))

    threading.Thread(target=fetch, name="export-in-flight", daemon=True).start()
    return result


def wait_for_lock_wait(database_url: str, like: str, timeout: float = 20) -> None:
    wait_until(lambda: waiting_on_locks(database_url, like) >= 1, timeout=timeout,
               what=f"an OpsDash statement like {like!r} waiting on the lock")


def banner(page) -> str:
    """The dashboard's error banner text ('' while there is none)."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        if not page.locator(".opsdash-error-banner:visible").count():
            return ""
        return " ".join(pane_texts(page, "opsdash-error-banner")).strip()
    except PlaywrightError:  # the page is (re)loading
        return ""


def wait_for_banner(page, wanted: str | None, timeout: float, what: str) -> float:
    """Seconds until the banner contains ``wanted`` (None: until there is no banner)."""
    start = time.monotonic()
    while True:
        shown = banner(page)
        if (wanted is None and not shown) or (wanted is not None and wanted in shown):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: the banner shows {shown!r} after {timeout} s")
        page.wait_for_timeout(200)


def live_indicator(page) -> str:
    """The header's live indicator text ('' while the page is (re)loading)."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        shown = pane_texts(page, "opsdash-live-indicator")
    except PlaywrightError:
        return ""
    return shown[0] if shown else ""


def page_load_id(page) -> float:
    """Changes only when the page is loaded again (a reload, by the user or by its script)."""
    return page.evaluate("performance.timeOrigin")


def notices(page) -> str:
    """The text of the page's notifications (Panel's toasts)."""
    return " ".join(page.locator(".notyf__message").all_inner_texts())


__all__ = ["SUMMARY_TABLES", "banner", "dsn", "export_in_flight", "live_indicator", "locked_tables", "notices",
           "page_load_id",
           "signed_cookie_header", "wait_for_banner", "wait_for_lock_wait", "waiting_on_locks"]
