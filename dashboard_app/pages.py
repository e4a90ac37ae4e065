"""The page a session gets: the dashboard, or a clear message instead."""
from __future__ import annotations

import logging

import panel as pn

from data.errors import NotAuthorized, OpsDashError
from data.tickets import count_tickets, counts_by

from .session import current_scope
from .settings import get_engine

log = logging.getLogger("opsdash.pages")


def message_page(title: str, text: str) -> pn.viewable.Viewable:
    return pn.Column(
        pn.pane.Markdown(f"## {title}"),
        pn.pane.Str(text),
        pn.pane.HTML('<a href="/logout">Sign out</a>'),
        sizing_mode="stretch_width",
    )


def build_page() -> pn.viewable.Viewable:
    try:
        scope = current_scope()
    except NotAuthorized as exc:
        return message_page("No access", str(exc))
    try:
        engine = get_engine()
        total = count_tickets(engine, scope)
        by_status = counts_by(engine, scope, "status")
    except OpsDashError as exc:
        return message_page("Something is wrong", str(exc))
    except Exception:
        log.exception("could not load the dashboard")
        return message_page("Dashboard unavailable", "The database could not be reached. Reload to try again.")
    who = f"{scope.username} ({scope.role.value.replace('_', ' ')})"
    return pn.Column(
        pn.pane.Markdown(f"## {scope.describe()}"),
        pn.pane.Str(f"Signed in as {who}"),
        pn.indicators.Number(name="Visible tickets", value=total, format="{value:,}"),
        pn.widgets.Tabulator(by_status.reset_index(), disabled=True, show_index=False),
        pn.pane.HTML('<a href="/logout">Sign out</a>'),
    )
