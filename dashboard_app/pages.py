"""The page a session gets: the dashboard, or a clear message instead (never a traceback)."""
from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import panel as pn
from panel.io.state import set_curdoc

from components.charts import backlog_lines
from components.panel_compat import AccessibleFastListTemplate, models_frozen, rehearse_page_parts
from components.store_view import text
from data.errors import NotAuthorized, OpsDashError
from data.metrics import SESSIONS
from data.models import Role
from data.scope import scope_for_user

from .dashboard import ACCENT, META_VIEWPORT, PAGE_FONT, Dashboard
from .log_format import bind_session_user
from .operations import OPERATIONS_VIEW, operations_page
from .panel_fence import end_session_connections
from .session import current_username
from .settings import get_engine
from .web_session import watch_session

log = logging.getLogger("opsdash.pages")

NO_ACCESS = "No access"
OPERATIONS_REFUSED = "The Operations page is for administrators"
UNAVAILABLE_TITLE = "Dashboard unavailable"
UNAVAILABLE_TEXT = "The ticket database could not be reached. Reload the page in a moment to try again."


def message_page(title: str, message: str) -> pn.template.BaseTemplate:
    """A page with one message and a way out; ``message`` is shown literally."""
    body = pn.Column(
        pn.pane.Markdown(f"## {title}"),  # our own fixed titles only
        text(message, styles={"font-size": "1.1em"}, css_classes=["opsdash-message"]),
        pn.pane.HTML('<p><a href="./">Reload</a> &middot; <a href="./logout">Sign out</a></p>'),
        sizing_mode="stretch_width", css_classes=["opsdash-message-page"],
    )
    return AccessibleFastListTemplate(title="OpsDash", main=[body], accent=ACCENT, header_background=ACCENT,
                                        meta_viewport=META_VIEWPORT, theme_toggle=False, font=PAGE_FONT)


def rehearse_first_page() -> None:
    """Build the kinds of parts a dashboard page has once at server start, unserved, with no data.

    The first person to sign in after a start no longer pays what Python and Panel do
    only the first time: imports on first use (Markdown's parser, Tabulator's styler,
    Bokeh's DataFrame columns) and the template's Jinja parse, ~0.2 s of a process's
    first page on the main thread (py-spy, 10M tickets).
    """
    trend = pd.DataFrame({"created": [0], "resolved": [0], "backlog": [0]},
                         index=pd.Index([date(2026, 1, 1)], name="day"))
    page = message_page("OpsDash", "Starting")
    rehearse_page_parts([*page.main, pn.widgets.Tabulator(pd.DataFrame({"tracking_number": ["-"]})),
                         pn.pane.Bokeh(backlog_lines(trend)[0])])


def end_when_signed_out() -> None:
    """Once this session's sign-in is revoked or expires, its data leaves the page and its websocket closes."""
    doc = pn.state.curdoc

    def end() -> None:
        with set_curdoc(doc):  # a Bokeh callback: the log line names its session (log_format)
            log.info("closing a dashboard whose sign-in has ended")
        doc.clear()  # every model leaves the page: nothing of the data stays on screen
        # A moment later, so the emptied page reaches the browser before its websocket closes.
        doc.add_timeout_callback(lambda: end_session_connections(doc), 1500)

    watch_session(end)


def requested_view() -> str:
    """The page the URL asks for (``?view=``): '' for the dashboard."""
    values = (pn.state.session_args or {}).get("view") or [b""]
    raw = values[0]
    return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip().lower()


def count_session(role: str) -> None:
    """``opsdash_sessions_open{role}`` while this served session lives."""
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return
    gauge = SESSIONS.labels(role)
    gauge.inc()
    closed = []

    def destroyed(_context) -> None:
        if not closed:  # once, however many paths tear the session down
            closed.append(True)
            gauge.dec()

    pn.state.on_session_destroyed(destroyed)


def build_operations_page(username: str) -> pn.viewable.Viewable:
    """The Operations page for an admin (the users table says so, not the URL); "No access" for anyone else."""
    scope = scope_for_user(get_engine(), username)  # NotAuthorized for roles without a dashboard
    if scope.role is not Role.ADMIN:
        log.warning("Operations page refused to %s (%s)", username[:150], scope.role.value)
        return message_page(NO_ACCESS, f"{OPERATIONS_REFUSED}.")
    page = operations_page(ACCENT, META_VIEWPORT, PAGE_FONT)
    log.info("Operations page opened")
    count_session(scope.role.value)
    end_when_signed_out()
    return page


def build_page() -> pn.viewable.Viewable:
    """The signed-in user's dashboard template (or, for ``?view=operations``, the Operations page), or a message page."""
    try:
        username = current_username()
        bind_session_user(pn.state.curdoc, username)
        if requested_view() == OPERATIONS_VIEW:
            return build_operations_page(username)
        dashboard = Dashboard(username=username)
        dashboard.connect_session()
        page = dashboard.template()
        log.info("dashboard opened (%s)", dashboard.scope.role.value)
        count_session(dashboard.scope.role.value)
        end_when_signed_out()
        return page
    except NotAuthorized as exc:
        log.info("no dashboard for this session: %s", exc)
        return message_page(NO_ACCESS, f"{exc}. The operations dashboard is for municipal managers, "
                                       "administrators and ward councillors.")
    except OpsDashError as exc:
        return message_page("Something is wrong", str(exc))
    except Exception:
        log.exception("could not build the dashboard")
        return message_page(UNAVAILABLE_TITLE, UNAVAILABLE_TEXT)


def serve_page(title: str = "OpsDash") -> None:
    """Build the page and add it to the session's document in one go.

    A template adds each of its ~17 parts as a document root, and Bokeh
    re-walks every model of the document after each one; frozen, it walks
    them once. Measured on the 1,000,000-ticket manager dashboard: 0.55-0.66 s
    -> 0.24 s of server CPU per page load (bench/bench_dashboard.py).
    """
    page = build_page()
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        page.servable(title=title)
        return
    with models_frozen(doc):
        page.servable(title=title)
