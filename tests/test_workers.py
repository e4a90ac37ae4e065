"""The budget for blocking database work (data/workers.py) and the shared results' isolation.

Bounds are checked where they live: threads by name in the process, connections
in PostgreSQL's own ``pg_stat_activity`` (OpsDash's engines name themselves there).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import uuid
from concurrent import futures
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, text

from components import query_cache
from components.store import DashboardStore
from components.table import TicketTable
from data.aggregates import ticket_figures
from data.db import APPLICATION_NAME, MAX_OVERFLOW, POOL_SIZE, statement_timeout
from data.errors import DatabaseBusy, DatabaseSlow
from data.scope import Scope
from data.tickets import count_tickets
from data.workers import DASHBOARD, EXPORT, LANES, OUTSIDE_LANES, SHORT, TREND, Lane

from .helpers.databases import add_tickets, scope_of, ticket_record


class Gate:
    """Blocks every task that calls it until opened: a lane's threads held on purpose."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self) -> str:
        self.entered.release()
        self._open.wait(30)
        return threading.current_thread().name

    def hold(self, lane: Lane, tasks: int) -> list[futures.Future]:
        """``tasks`` tasks in ``lane``; returns once every thread of the lane is inside one."""
        held = [lane.try_submit(self) or lane.submit(self) for _ in range(tasks)]  # TREND: try_submit only
        for _ in range(min(tasks, lane.threads)):
            assert self.entered.acquire(timeout=10), f"the {lane.name} lane did not start its tasks"
        return held

    def open(self) -> None:
        self._open.set()


def test_the_lanes_never_want_more_connections_than_an_engines_pool(pg_url, tmp_path):
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from data.db import make_engine

    assert sum(lane.threads for lane in LANES) + OUTSIDE_LANES <= POOL_SIZE + MAX_OVERFLOW
    assert min(SHORT.threads, DASHBOARD.threads, TREND.threads, EXPORT.threads) >= 1
    postgres = make_engine(pg_url)
    assert postgres.pool.size() == POOL_SIZE
    with postgres.connect() as conn:
        assert conn.execute(text("SELECT current_setting('application_name')")).scalar_one() == APPLICATION_NAME
    postgres.dispose()
    # A SQLite file (the demo) gets the same pool, not SQLAlchemy's 5 + 10: every connection the lanes
    # may want, and not one more.
    sqlite = make_engine(f"sqlite:///{tmp_path}/pool.sqlite3", pool_timeout=0.2)
    held = [sqlite.connect() for _ in range(POOL_SIZE + MAX_OVERFLOW)]
    with pytest.raises(PoolTimeout):
        sqlite.connect()
    for conn in held:
        conn.close()
    sqlite.dispose()


def test_more_loads_than_threads_never_use_more_threads_or_connections_than_the_lane(pg_engine):
    """DASHBOARD.threads + 6 loads at once: PostgreSQL sees at most DASHBOARD.threads of them running."""
    marker = f"budget-probe-{uuid.uuid4().hex}"
    lock, running, peak, names = threading.Lock(), [0], [0], set()

    def load() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            names.add(threading.current_thread().name)
        try:
            with pg_engine.connect() as conn:
                conn.execute(text(f"SELECT pg_sleep(1) /* {marker} */"))
        finally:
            with lock:
                running[0] -= 1

    probe = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :app AND state = 'active' "
                 "AND query LIKE :marker AND pid <> pg_backend_pid()")
    loads = [DASHBOARD.submit(load) for _ in range(DASHBOARD.threads + 6)]
    seen = []
    with pg_engine.connect() as conn:  # outside the lane, like the event loop's own calls
        while not all(f.done() for f in loads):
            seen.append(conn.execute(probe, {"app": APPLICATION_NAME, "marker": f"%{marker}%"}).scalar_one())
            conn.commit()  # a new snapshot of pg_stat_activity each time
            time.sleep(0.02)
    assert all(f.exception() is None for f in loads)
    assert max(seen) == DASHBOARD.threads  # used to the bound, never beyond it
    assert peak[0] == DASHBOARD.threads
    assert len(names) <= DASHBOARD.threads and all(n.startswith("opsdash-dashboard") for n in names)


def test_a_full_lane_refuses_late_tasks_with_a_clear_error_and_then_recovers(caplog):
    lane, gate = Lane("tiny", 2, 0.3, "Busy: try again in a moment."), Gate()
    held = gate.hold(lane, 2)
    never = []

    async def late_callers() -> list:
        started = time.monotonic()
        results = await asyncio.gather(*(lane.run(never.append, i) for i in range(3)), return_exceptions=True)
        return [time.monotonic() - started, *results]

    try:
        with caplog.at_level(logging.WARNING, logger="opsdash.workers"):
            waited, *results = asyncio.run(late_callers())
            queued = lane.submit(never.append, "from a thread")  # no deadline timer: refused when picked up
            time.sleep(0.4)
    finally:
        gate.open()
    assert [str(r) for r in results] == ["Busy: try again in a moment."] * 3
    assert all(isinstance(r, DatabaseBusy) for r in results)
    assert 0.25 < waited < 5  # at the deadline, not when the held threads let go
    assert all(f.result(10).startswith("opsdash-tiny") for f in held)
    with pytest.raises(DatabaseBusy):
        queued.result(10)
    assert never == []  # a refused task never runs
    assert "tiny lane full" in caplog.text
    assert asyncio.run(lane.run(lambda: 41 + 1)) == 42
    assert lane.snapshot() == {"threads": 2, "running": 0, "queued": 0, "refused": 4}


def test_a_task_runs_with_its_submitters_context_variables():
    who = contextvars.ContextVar("who", default="nobody")

    async def ask() -> tuple[str, str]:
        who.set("the session's document")
        return await DASHBOARD.run(who.get), await asyncio.wrap_future(DASHBOARD.submit(who.get))

    assert asyncio.run(ask()) == ("the session's document", "the session's document")


def test_a_sign_in_and_a_live_lookup_do_not_wait_behind_full_dashboard_and_export_lanes(pg_engine):
    gate = Gate()
    held = gate.hold(DASHBOARD, DASHBOARD.threads + 3) + gate.hold(EXPORT, EXPORT.threads + 2)

    def short_query() -> int:
        with pg_engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar_one()

    try:
        started = time.monotonic()
        assert asyncio.run(SHORT.run(short_query)) == 1
        assert time.monotonic() - started < 5
    finally:
        gate.open()
    futures.wait(held, timeout=30)


def test_with_the_trend_lane_full_the_figures_still_come_from_one_snapshot(pg_engine):
    """The trend's own thread and connection are a bonus: without one free the figures load waits for
    nothing and the trend runs after the counts, on the first connection, in the same snapshot."""
    engine, tenant = pg_engine, uuid.uuid4()
    now = datetime.now(timezone.utc)
    add_tickets(engine, [ticket_record(tenant, created_at=now - timedelta(hours=h)) for h in (1, 2, 30)])
    # In UTC while the tenant's local days are counted in the default zone: the summary tables
    # (migration 0009) cannot answer, so the figures are scanned (as with a date or search filter).
    scope = Scope(municipality_id=tenant, role="manager", timezone="UTC")
    written: list[str] = []

    def write_after_the_snapshot(conn, cursor, statement, *_args):
        if "pg_export_snapshot" in statement and not written:
            add_tickets(engine, [ticket_record(tenant, created_at=now - timedelta(minutes=5))])
            written.append(statement)

    def figures() -> tuple[int, int]:
        result = ticket_figures(engine, scope, None, ("category", "status", "ward_id"), days=7, now=now)
        return int(result.breakdown["tickets"].sum()), int(result.by_day["created"].sum())

    gate = Gate()
    held = gate.hold(TREND, TREND.threads)
    event.listen(engine, "after_cursor_execute", write_after_the_snapshot)
    try:
        assert TREND.try_submit(print) is None
        during = DASHBOARD.submit(figures).result(30)  # a deadlock would time out here
    finally:
        event.remove(engine, "after_cursor_execute", write_after_the_snapshot)
        gate.open()
    futures.wait(held, timeout=30)
    assert written and during == (3, 3)
    assert figures() == (4, 4)  # and with a trend thread free again


def test_many_sessions_loading_the_same_figures_at_once_all_get_them(engine, make_seed):
    """More loads than the lane has threads, most of them waiting for the one query: none deadlocks."""
    query_cache.clear()
    scope = scope_of(engine, make_seed(tickets=150), "manager")
    stores = [DashboardStore(scope=scope, engine=engine) for _ in range(DASHBOARD.threads + 5)]
    loads = [DASHBOARD.submit(store.figures) for store in stores]
    results = [f.result(60) for f in loads]
    assert {int(r.breakdown["tickets"].sum()) for r in results} == {count_tickets(engine, scope)}
    assert len({id(r.breakdown) for r in results}) == len(results)  # each session its own frame


def test_waiting_for_another_sessions_query_is_bounded(engine, make_seed, monkeypatch):
    monkeypatch.setattr(query_cache, "WAIT_S", 0.3)
    scope = scope_of(engine, make_seed(tickets=20), "manager")
    gate = Gate()

    def slow() -> str:
        gate()
        return "figures"

    first = DASHBOARD.submit(query_cache.cached, "slow", engine, scope, (), slow, ttl_s=60)
    assert gate.entered.acquire(timeout=10)
    started = time.monotonic()
    with pytest.raises(DatabaseBusy, match="Try again"):
        query_cache.cached("slow", engine, scope, (), slow, ttl_s=60)
    assert 0.25 < time.monotonic() - started < 5
    gate.open()
    assert first.result(10) == "figures"
    assert query_cache.cached("slow", engine, scope, (), slow, ttl_s=60) == "figures"  # shared, not recomputed


def test_changing_a_shared_frame_in_place_never_changes_another_sessions(engine, make_seed):
    query_cache.clear()
    result = make_seed(tickets=200)
    scope = scope_of(engine, result, "manager")
    total = count_tickets(engine, scope)
    first, second = (DashboardStore(scope=scope, engine=engine, cache_ttl_s=60) for _ in range(2))

    mine = first.figures()  # computed here: the caller that ran the query gets a copy too
    mine.breakdown["tickets"] = 0
    mine.breakdown.loc[:, "open"] = -1
    mine.by_day.iloc[0, 0] = 10**6
    del mine.breakdown["status"]
    theirs = second.figures()
    assert int(theirs.breakdown["tickets"].sum()) == total and int(theirs.breakdown["open"].min()) >= 0
    assert "status" in theirs.breakdown.columns
    assert int(theirs.by_day.iloc[0, 0]) < 10**6
    theirs.breakdown["tickets"] = 0
    with DashboardStore.cache_only():  # the page-as-sent path hands out copies as well
        assert int(second.figures().breakdown["tickets"].sum()) == total

    page = TicketTable(store=first).load_page()
    columns, rows = list(page.frame.columns), len(page.frame)
    page.frame["tracking_number"] = "forged"
    del page.frame["status"]
    again = TicketTable(store=second).load_page().frame
    assert list(again.columns) == columns and len(again) == rows > 0 and "forged" not in set(again["tracking_number"])


def test_health_answers_503_degraded_when_the_short_lane_stays_full(monkeypatch):
    """An overloaded server says so (503 + a status body), never a 500 and a traceback."""
    import tornado.httpclient
    import tornado.web

    from dashboard_app.health_route import HealthHandler

    monkeypatch.setattr(SHORT, "wait_s", 0.3)
    gate = Gate()
    held = gate.hold(SHORT, SHORT.threads)

    async def ask() -> tornado.httpclient.HTTPResponse:
        server = tornado.web.Application([(r"/health", HealthHandler)]).listen(0, address="127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        try:
            return await tornado.httpclient.AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/health",
                                                                    raise_error=False)
        finally:
            server.stop()

    try:
        response = asyncio.run(ask())
    finally:
        gate.open()
    assert response.code == 503
    assert response.body == b'{"status": "degraded"}'
    assert all(f.result(10) for f in held)


def test_a_view_whose_load_finds_no_database_worker_says_so_in_the_banner(engine, make_seed, monkeypatch):
    """A served view whose load the dashboard lane refused keeps what it shows, and the store's
    banner (with its Retry) says the database is busy: never a silent page that stopped changing."""
    import panel as pn
    from bokeh.client import pull_session

    from components.kpis import KpiCards

    from .helpers.live import wait_until
    from .helpers.servers import served

    result = make_seed(tickets=50, wards=2, municipalities=1)
    stores: list[DashboardStore] = []

    def app():
        store = DashboardStore(scope=scope_of(engine, result, "manager"), engine=engine, cache_ttl_s=0)
        stores.append(store)
        return pn.Column(KpiCards(store=store))

    monkeypatch.setattr(DASHBOARD, "wait_s", 0.3)
    gate = Gate()
    held = gate.hold(DASHBOARD, DASHBOARD.threads)
    try:
        with served(app) as url:
            session = pull_session(url=url)
            try:
                wait_until(lambda: stores and stores[0].error == DASHBOARD.busy_message, timeout=10,
                           what="the busy banner")
            finally:
                session.close()
    finally:
        gate.open()
    assert all(f.result(10) for f in held)


def test_a_statement_over_the_timeout_is_stopped_as_database_slow_and_the_limit_stays_with_its_context(pg_engine):
    """Issue 19: a slow database costs a view its refresh (DatabaseSlow, a message), never a thread for ever;
    the pooled connection carries no limit into work that set none (exports, the command line)."""
    pg_engine.dispose()  # one pooled connection, reused below
    with statement_timeout(0.2):
        with pytest.raises(DatabaseSlow, match="slow"):
            with pg_engine.connect() as conn:
                conn.execute(text("SELECT pg_sleep(2)"))
        with pg_engine.connect() as conn:  # the connection is fine afterwards
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    with pg_engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.4)"))  # over the old limit: none applies here
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "0"


def test_every_lane_but_exports_runs_under_the_statement_timeout(pg_engine):
    def shown() -> str:
        with pg_engine.connect() as conn:
            return conn.execute(text("SHOW statement_timeout")).scalar_one()

    async def scenario() -> dict[str, str]:
        return {lane.name: await lane.run(shown) for lane in (SHORT, DASHBOARD, EXPORT)}

    assert asyncio.run(scenario()) == {"short": "30s", "dashboard": "30s", "export": "0"}
