"""Start-up of a served OpsDash process, run once when ``panel serve`` loads ``dashboard_app.routes``.

Panel gives ``panel serve`` no start-up hook other than its ``--plugins``
modules: ``panel/command/serve.py`` imports each one and reads its
``ROUTES``, after parsing the command line and before the server starts.
So ``routes.py`` calls :func:`start` when it is imported.
"""
from __future__ import annotations

import gc
import logging

from panel.config import config
from tornado.ioloop import IOLoop, PeriodicCallback

from components import panel_compat
from data.audit import pending_count, write_pending
from data.summaries import advance_marks
from data.web_sessions import forget_old_sessions
from data.workers import SHORT

# Imported at server start, not at the first sign-in: the page's modules (pandas, SQLAlchemy,
# the views: ~0.8 s), so the first person to sign in after a restart does not wait for them.
from . import pages
from . import panel_fence
from . import shutdown
from .compression import STATIC_CACHE, CompressedResponses
from .live import process_hub
from .log_format import configure_logging
from .metrics_route import register_process_collectors
from .settings import get_engine, get_settings
from .web_session import REVOCATIONS, session_lifetime

log = logging.getLogger("opsdash.server")
#: How often the server tries to write the audit rows of failed exports that wait for the database.
PENDING_AUDITS_MS = 5000
#: How often the server deletes sign-in rows that ended over 30 days ago (every process may: the same DELETE).
FORGET_SIGN_INS_MS = 60 * 60 * 1000
#: How often the server moves the summaries' marks to the current hour (``data.summaries.advance_marks``).
ADVANCE_MARKS_MS = 60_000


def start() -> None:
    """Fence Panel, hand it the cookie secret, freeze what lives as long as the process, start live updates,
    stop gracefully on SIGTERM (``shutdown``)."""
    # Sign-ins, refusals and the route table are what an operator reads the server log for (INFO by default).
    logging.getLogger("opsdash").setLevel(get_settings().log_level)
    configure_logging(get_settings())  # OPSDASH_LOG_FORMAT=json: one JSON object per line, from here on
    register_process_collectors()  # /metrics and the Operations page read the hub, the pool, the lanes
    panel_fence.install()
    # Lighter pages (issue 17): compressed responses and cache lifetimes (Tornado's public
    # OutputTransform, added where Bokeh builds its application), no WebGL bundle nor Google
    # Fonts, scripts after the page's first paint. Notebooks keep Panel's own pages: this runs in a server only.
    panel_compat.add_response_transform(CompressedResponses)
    STATIC_CACHE.preload()  # an earlier process's best copies, read in the background
    panel_compat.serve_pages_without_webgl()
    panel_compat.serve_pages_without_google_fonts()
    panel_compat.serve_pages_scripts_after_first_paint()
    use_opsdash_cookie_secret()
    try:
        pages.rehearse_first_page()
    except Exception:  # only the first sign-in is slower for it
        log.warning("could not rehearse a page at start", exc_info=True)
    # What is alive now (modules, classes, Panel's and Bokeh's registries: ~230,000 objects) lives
    # as long as the process. Frozen, the garbage collector stops scanning it over and over: its
    # full collections during sign-ins measured 130-250 ms each, 35-80 ms after the freeze.
    gc.collect()
    gc.freeze()
    IOLoop.current().add_callback(connect_live_updates)
    IOLoop.current().add_callback(shutdown.install)  # once the loop runs: after Bokeh's own SIGTERM handler
    IOLoop.current().add_callback(PeriodicCallback(write_pending_audits, PENDING_AUDITS_MS).start)
    IOLoop.current().add_callback(forget_ended_sign_ins)
    IOLoop.current().add_callback(PeriodicCallback(forget_ended_sign_ins, FORGET_SIGN_INS_MS).start)
    IOLoop.current().add_callback(advance_summary_marks)  # at start, then every minute
    IOLoop.current().add_callback(PeriodicCallback(advance_summary_marks, ADVANCE_MARKS_MS).start)


def use_opsdash_cookie_secret() -> None:
    """The cookie secret reaches Panel from the environment (``OPSDASH_COOKIE_SECRET``), never argv.

    Panel 1.9 checks that it has one only after loading the plugin, so there ``panel serve ...
    --plugins dashboard_app.routes`` needs no ``--cookie-secret`` (which any local user could read in
    the process list). Panel 1.10 checks before: there set ``PANEL_COOKIE_SECRET`` too (README);
    ``opsdash serve`` does it for you.
    """
    secret = get_settings().cookie_secret
    if secret and not config.cookie_secret:
        config.cookie_secret = secret


def write_pending_audits() -> None:
    """Audit rows of failed exports that waited for the database (``data.audit``): written once it answers."""
    if pending_count():
        SHORT.submit(write_pending)


def forget_ended_sign_ins() -> None:
    """``web_sessions`` keeps a row per sign-in: those ended over 30 days ago go (the table stays small)."""
    _in_background(forget_old_sessions, "forget old sign-ins")


def advance_summary_marks() -> None:
    """Keep the whole-municipality figures' cost bounded: the marks of the deadlines ahead follow the hour.

    Figures are exact without it; only one process of several does the work at a time
    (the others return at once).
    """
    _in_background(advance_marks, "advance the summaries' marks", only_if_free=True)


def _in_background(task, what: str, *, only_if_free: bool = False) -> None:
    """``task(engine)`` in a SHORT lane thread (``only_if_free``: skipped when none is free). A failure (the
    database away) is logged; the next call catches up."""
    def run() -> None:
        try:
            task(get_engine())
        except Exception:
            log.warning("could not %s", what, exc_info=True)

    (SHORT.try_submit if only_if_free else SHORT.submit)(run)


def connect_live_updates() -> None:
    """Start this process's live hub as soon as the server's event loop runs.

    Started by the first sign-in instead, the hub was not yet live when that
    sign-in loaded its figures: they were cached without a change mark
    (components.query_cache), so the next manager signing in a few seconds
    later ran every query again. It also spares the first sign-in the Redis
    connection.
    """
    # Panel checks a cookie's age against its own --oauth-expiry-days; ours is the session's.
    config.oauth_expiry = session_lifetime().total_seconds() / 86400
    try:
        process_hub()
    except Exception:  # the first session tries again (and its page says live updates are off)
        log.exception("could not start live updates at server start")
    try:
        # Sign-outs in any process (Redis) or this one close the open pages of the sign-in at once.
        REVOCATIONS.start(get_settings().redis_url)
    except Exception:  # pages still check their sign-in every web_session.SESSION_CHECK_MS
        log.exception("could not listen for sign-out announcements")
