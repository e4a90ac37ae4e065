"""The process's budget for blocking database work: a few bounded lanes of worker threads.

Everything that blocks on the database (or, for a sign-in, on argon2) runs
in one of these lanes, never in a thread of its own or in asyncio's default
executor. A lane has a fixed number of threads; each thread holds at most
one connection at a time, so the lanes together never want more connections
than the pool has (``data.db``: POOL_SIZE + MAX_OVERFLOW = 30 per engine):

==========  =======  ======  =====================================================
lane        threads  waits   what runs there
==========  =======  ======  =====================================================
SHORT          4      10 s   sign-in, session checks, sign-out, ``/health``, the live
                             hub's ticket lookups, publish checks, simulator steps
DASHBOARD     15      30 s   the views' loads, the sign-in prefetch, export counts,
                             the admins' hidden-category notice
TREND          7      never  the second connection of a whole municipality's figures
EXPORT         2      60 s   file exports (the buttons and ``/export/download``)
==========  =======  ======  =====================================================

4 + 15 + 7 + 2 = 28; the other 2 connections are for what blocks on the
event loop itself (a page build's user lookup). SHORT is separate so that a
sign-in or a live event never waits behind slow dashboard queries; EXPORT,
so that a few large exports never take the dashboards' threads. TREND is
never waited for: with none free, the trend runs after the counts on the
first connection (``data.aggregates``).

A full lane queues its tasks, and a task that found no thread within the
lane's wait fails with DatabaseBusy (a message for the user) and a log line:
threads are never created beyond the budget, and nothing waits for ever.
A task runs with the submitter's context variables (Panel's current document).
Queries of every lane but EXPORT are stopped by PostgreSQL after
``OPSDASH_STATEMENT_TIMEOUT_S`` (DatabaseSlow: the page says the database is
slow and keeps what it shows), so a lock or a runaway plan cannot hold a
thread, a connection and a waiting page for ever.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, TypeVar

from .db import MAX_OVERFLOW, POOL_SIZE, statement_timeout
from .errors import ConfigError, DatabaseBusy
from .settings import current_settings

T = TypeVar("T")
log = logging.getLogger("opsdash.workers")

#: Connections left to blocking calls made on the event loop thread itself (one at a time) and a spare.
OUTSIDE_LANES = 2


class Lane:
    """At most ``threads`` calls at a time; the rest queue for up to ``wait_s`` seconds each."""

    def __init__(self, name: str, threads: int, wait_s: float, busy_message: str, *,
                 limited: bool = True) -> None:
        """``limited``: its queries are stopped at ``OPSDASH_STATEMENT_TIMEOUT_S`` (DatabaseSlow)."""
        if threads < 1:
            raise ValueError(f"lane {name!r} needs at least one thread")
        self.name, self.threads, self.wait_s, self.busy_message = name, threads, wait_s, busy_message
        self.limited = limited
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"opsdash-{name}")
        self._lock = threading.Lock()
        self._admitted = 0  # queued or running
        self.running = 0
        self.refused = 0  # tasks that waited wait_s without a thread

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` now (never blocks); its result or error in the Future.

        Not run (DatabaseBusy) if no thread took it within ``wait_s``.
        Never wait, in a lane's thread, for a task queued in the same lane.
        """
        with self._lock:
            self._admitted += 1
        return self._queue(fn, args, kwargs, self.wait_s).future

    def try_submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T] | None:
        """``submit`` when a thread is free, else None at once (the caller does the work itself)."""
        with self._lock:
            if self._admitted >= self.threads:
                return None
            self._admitted += 1
        return self._queue(fn, args, kwargs, None).future

    def start(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """``submit`` now, awaitable on the running loop; DatabaseBusy after ``wait_s`` without a thread."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._admitted += 1
        task = self._queue(fn, args, kwargs, self.wait_s)
        # The waiting caller learns at the deadline, not when a thread finally frees up. A weak
        # reference: a task that ran is not kept (nor its result) until the deadline passes.
        loop.call_later(self.wait_s, _expire, weakref.ref(task))
        return asyncio.wrap_future(task.future, loop=loop)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in this lane (see ``start``)."""
        return await self.start(fn, *args, **kwargs)

    def snapshot(self) -> dict[str, int]:
        """For the operator's ``/health`` details."""
        with self._lock:
            return {"threads": self.threads, "running": self.running,
                    "queued": self._admitted - self.running, "refused": self.refused}

    def _queue(self, fn: Callable[..., T], args: tuple, kwargs: dict, wait_s: float | None) -> _Task:
        if self.limited:
            fn, args = _with_statement_timeout, (fn, *args)
        task = _Task(self, partial(contextvars.copy_context().run, fn, *args, **kwargs), wait_s)
        self._pool.submit(task.run)
        return task

    def _release(self, refused_after: float | None = None) -> None:
        """A task left the lane: ran, was cancelled, or (``refused_after`` seconds) was refused."""
        with self._lock:
            self._admitted -= 1
            if refused_after is None:
                return
            self.refused += 1
            n, queued = self.refused, self._admitted - self.running
        if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: an overload cannot flood the log
            log.warning("%s lane full: a task found none of its %d threads free in %.1f s (%d still queued); "
                        "%d refused so far", self.name, self.threads, refused_after, queued, n)


class _Task:
    """One call in a lane: run by a thread, or refused at its deadline, whichever comes first."""

    __slots__ = ("lane", "call", "future", "queued_at", "wait_s", "taken", "__weakref__")

    def __init__(self, lane: Lane, call: Callable[[], Any], wait_s: float | None) -> None:
        self.lane, self.call, self.wait_s = lane, call, wait_s
        self.future: Future = Future()
        self.queued_at = time.monotonic()
        self.taken = False

    def _take(self) -> bool:
        with self.lane._lock:
            if self.taken:
                return False
            self.taken = True
            return True

    def expire(self) -> None:
        """The deadline: refuse the task if no thread has taken it yet."""
        if self._take():
            self._refuse(time.monotonic() - self.queued_at)

    def _refuse(self, waited: float) -> None:
        if self.future.set_running_or_notify_cancel():
            self.lane._release(refused_after=waited)
            self.future.set_exception(DatabaseBusy(self.lane.busy_message))
        else:  # its caller gave up first
            self.lane._release()

    def run(self) -> None:
        if not self._take():
            return  # refused at its deadline: the thread moves on at once
        waited = time.monotonic() - self.queued_at
        if self.wait_s is not None and waited > self.wait_s:  # a deadline nobody timed (``submit``)
            self._refuse(waited)
            return
        lane = self.lane
        with lane._lock:
            lane.running += 1
        result: Any = None
        error: BaseException | None = None
        started = False
        try:
            started = self.future.set_running_or_notify_cancel()
            if started:
                try:
                    result = self.call()
                except BaseException as exc:
                    error = exc
        finally:
            # The task leaves the lane before its caller hears of it: a caller that reads the
            # lane's snapshot after the result never sees its own task still running.
            with lane._lock:
                lane.running -= 1
                lane._admitted -= 1
        if not started:
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


def _with_statement_timeout(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        seconds = current_settings().statement_timeout_s
    except ConfigError:  # a served process has refused to start on it already; a script gets no limit
        seconds = 0
    with statement_timeout(seconds):
        return fn(*args, **kwargs)


def _expire(task: weakref.ref[_Task]) -> None:
    alive = task()
    if alive is not None:
        alive.expire()


def _lane_sizes(connections: int) -> tuple[int, int, int, int]:
    """(SHORT, DASHBOARD, TREND, EXPORT) threads for a pool of ``connections``: see the module's table."""
    short, export = 4, 2
    rest = connections - OUTSIDE_LANES - short - export
    trend = rest // 3
    return short, rest - trend, trend, export


_SHORT, _DASHBOARD, _TREND, _EXPORT = _lane_sizes(POOL_SIZE + MAX_OVERFLOW)
SHORT = Lane("short", _SHORT, 10.0, "The server is too busy to answer right now. Try again in a moment.")
DASHBOARD = Lane("dashboard", _DASHBOARD, 30.0,
                 "The ticket database is busy, so these figures could not be loaded. Try again in a moment.")
TREND = Lane("trend", _TREND, 0.0, "")  # try_submit only: never queued
# Exports read every matching row (minutes at ten million tickets): never stopped at the dashboard's timeout.
EXPORT = Lane("export", _EXPORT, 60.0, "Too many exports are running right now. Try again in a minute.",
              limited=False)
LANES = (SHORT, DASHBOARD, TREND, EXPORT)


def snapshot() -> dict[str, dict[str, int]]:
    """Every lane's threads, running and queued tasks, and refusals."""
    return {lane.name: lane.snapshot() for lane in LANES}


__all__ = ["DASHBOARD", "EXPORT", "LANES", "Lane", "OUTSIDE_LANES", "SHORT", "TREND", "snapshot"]
