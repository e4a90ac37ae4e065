"""Admins only: how many tickets are hidden because their category is not a known one.

A ticket of an unknown category is treated as sensitive (data.sensitivity:
fail closed). This notice keeps that from hiding a new category of the
ticketing system by accident: an admin sees the number and the spellings
(never a ticket's content) and can add the category on purpose.
"""
from __future__ import annotations

import logging

import panel as pn
import param

from data.categories import hidden_categories
from data.models import Role
from data.workers import DASHBOARD

from . import query_cache
from .store import DashboardStore
from .store_view import text

log = logging.getLogger("opsdash.hidden_categories")


def hidden_categories_text(tickets: int, spellings: tuple[tuple[str, int], ...]) -> str:
    """The notice's sentence ('' when nothing is hidden for an unknown category)."""
    if not tickets:
        return ""
    listed = ", ".join(f"{spelling} ({count})" for spelling, count in spellings)
    return (f"{tickets} ticket{'s are' if tickets != 1 else ' is'} hidden because the category is not a known one: "
            f"{listed}. If one is a real category, add it on purpose: opsdash category add NAME.")


class HiddenCategoriesNotice(pn.viewable.Viewer):
    """One line for admins; nothing for anyone else (the data layer refuses them too)."""

    store = param.ClassSelector(class_=DashboardStore)

    async def _notice(self) -> pn.viewable.Viewable:
        empty = text("", visible=False)
        if self.store.scope.role is not Role.ADMIN:
            return empty
        try:
            engine, scope = self.store.engine, self.store.scope
            hidden = await DASHBOARD.run(query_cache.timed, "hidden_categories",
                                         lambda: hidden_categories(engine, scope))
        except Exception:  # the dashboard's own banner reports a database outage
            log.exception("hidden-category count could not be loaded")
            return empty
        sentence = hidden_categories_text(hidden.tickets, hidden.spellings)
        # text() escapes: a spelling is stored text, never markup.
        return text(sentence, visible=bool(sentence), css_classes=["opsdash-hidden-categories"],
                    styles={"color": "#5c4400", "background": "#fff4ce", "padding": "4px 8px"},
                    sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.panel(self._notice, sizing_mode="stretch_width")
