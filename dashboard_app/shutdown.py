"""A graceful stop on SIGTERM (issue 19): what a service manager or a rolling restart sends.

Within ``OPSDASH_SHUTDOWN_GRACE_S`` of the signal:

1. every open page is told "the server is restarting" (a notice that stays; the page's
   own script then reconnects to whichever process answers next, see ``assets/live_status.js``);
   ``/health`` answers 503 ``shutting down`` (a load balancer stops sending people here) and new
   streamed exports are refused with a message to try again;
2. streamed exports already running (``/export/download``) may finish; any still running
   ``CUT_MARGIN_S`` before the end is answered with a clear 503 (no file) and audited as failed;
3. the live hub closes its bus connection, the server's event loop stops and the process exits.

A thread still blocked in the database (that cut export's query) cannot hold the process past
the grace period: a watchdog ends it then. A second SIGTERM ends it at once.

Bokeh's ``run_until_shutdown`` installs a SIGTERM handler that stops the loop at once; ours
replaces it (``asyncio``'s ``add_signal_handler``, one handler per signal) when the loop starts.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from typing import Iterator

from tornado.ioloop import IOLoop

from data.errors import ExportCancelled

from .live import live_sessions, stop_live_updates
from .settings import get_settings

log = logging.getLogger("opsdash.server")

RESTART_NOTICE = "The server is restarting. This page reconnects by itself in a moment."
RESTART_REFUSAL = "The server is restarting: start the export again in a moment."
CUT_MESSAGE = "The server restarted before the export finished: start it again in a moment."
#: Exports still running this long before the grace period ends are cut (answered, audited), so the
#: loop can stop and the process exit in time.
CUT_MARGIN_S = 1.5


class ExportCut(ExportCancelled):
    """A running export was stopped because the server is shutting down."""


class _State:
    def __init__(self) -> None:
        self.started_at: float | None = None
        self.exports = 0
        self.cut = threading.Event()  # read by export threads (``check_export``)
        self.graceful_done = False
        self._changed: asyncio.Event | None = None

    def changed(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()


_state = _State()


def shutting_down() -> bool:
    return _state.started_at is not None


def install() -> None:
    """On the server's running event loop: SIGTERM starts ``begin`` (replacing Bokeh's immediate stop)."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, begin)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        log.info("SIGTERM stops the server at once here (no graceful shutdown)")


def begin() -> None:
    """The signal: start the graceful stop (a second signal exits at once)."""
    if shutting_down():
        log.warning("second SIGTERM: exiting now")
        _exit(1)
    grace = get_settings().shutdown_grace_s
    _state.started_at = time.monotonic()
    log.info("SIGTERM: shutting down within %d s (%d open sessions, %d streamed exports running)",
             grace, len(live_sessions()), _state.exports)
    watchdog = threading.Timer(grace, _watchdog)
    watchdog.daemon = True
    watchdog.start()
    asyncio.get_running_loop().create_task(_shut_down(grace), name="opsdash-shutdown")


async def _shut_down(grace: float) -> None:
    try:
        for session in live_sessions():
            try:
                session.announce(RESTART_NOTICE)
            except Exception:  # one closed page must not keep the others from hearing it
                log.debug("could not tell a session about the restart", exc_info=True)
        cut_at = _state.started_at + max(0.5, grace - CUT_MARGIN_S)
        while _state.exports and time.monotonic() < cut_at:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_state.changed().wait(), cut_at - time.monotonic())
        if _state.exports:
            log.warning("cutting %d streamed exports still running at the end of the grace period", _state.exports)
            _state.cut.set()
            _state.notify()
            deadline = time.monotonic() + 0.5  # their handlers answer and audit, then the loop may stop
            while _state.exports and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        # A page's next heartbeat must not find the notice's change still queued: one tick for them.
        await asyncio.sleep(0.3)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stop_live_updates(), 1.0)
    except Exception:
        log.exception("graceful shutdown failed; stopping now")
    _state.graceful_done = True
    log.info("shut down after %.1f s", time.monotonic() - _state.started_at)
    IOLoop.current().stop()  # Bokeh's run_until_shutdown then stops the server and returns


def _watchdog() -> None:
    """The grace period is over: whatever still runs (a thread blocked in the database) ends with the process."""
    log.warning("still running %d s after SIGTERM: exiting now", get_settings().shutdown_grace_s)
    _exit(0 if _state.graceful_done else 1)


def _exit(code: int) -> None:
    logging.shutdown()  # the log's last lines reach their files
    os._exit(code)


@contextlib.contextmanager
def running_export() -> Iterator[None]:
    """Around a streamed export: the graceful stop waits for it (until the cut)."""
    _state.exports += 1
    try:
        yield
    finally:
        _state.exports -= 1
        _state.notify()


def check_export(_done: int = 0, _total: int = 0) -> None:
    """An export's progress callback: raises ExportCut once the server cut running exports."""
    if _state.cut.is_set():
        raise ExportCut(CUT_MESSAGE)


async def cut_or(future: asyncio.Future) -> bool:
    """Wait for ``future``; False when running exports were cut first (``future`` is left to fail)."""
    while not future.done():
        if _state.cut.is_set():
            return False
        waiter = asyncio.ensure_future(_state.changed().wait())
        try:
            await asyncio.wait({future, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
    return True


__all__ = ["CUT_MESSAGE", "ExportCut", "RESTART_NOTICE", "RESTART_REFUSAL", "begin", "check_export", "cut_or", "install", "running_export",
           "shutting_down"]
