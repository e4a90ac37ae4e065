"""LiveFeed: the newest live events of a session, as plain text, and the connection state.

It shows what ``dashboard_app.live`` hands it (already scoped and
sensitive-free by the hub); it owns no connection. Everything shown is
escaped text: event fields come from other systems and may contain markup.
"""
from __future__ import annotations

from html import escape
from typing import Iterable
from zoneinfo import ZoneInfo

import panel as pn
import param
from bokeh.models import Div

from data.events import Event

from .store import DashboardStore

COLUMNS = ("Time", "Type", "Tracking number", "Category", "Ward", "Status")
TYPE_LABELS = {
    "ticket_created": "created",
    "ticket_updated": "updated",
    "sla_breach": "SLA breach",
    "assignment_changed": "assigned",
}
FEED_CSS = """
.opsdash-feed-scroll { max-height: 240px; overflow-y: auto; }
.opsdash-feed-table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
.opsdash-feed-table th { text-align: left; color: #555; font-weight: 600; border-bottom: 1px solid #ccc; }
.opsdash-feed-table th, .opsdash-feed-table td { padding: 2px 8px; white-space: nowrap; }
.opsdash-feed-table tbody tr:nth-child(even) { background: #f6f6f6; }
.opsdash-feed-table .opsdash-feed-empty { color: #555; font-style: italic; padding: 6px 8px; }
/* A phone: six columns fit 390 px only if cells may wrap (the Status column was cut off). */
@media (max-width: 600px) {
  .opsdash-feed-table { font-size: 0.8em; }
  .opsdash-feed-table th, .opsdash-feed-table td { white-space: normal; padding: 2px 4px; }
}
"""
#: What an empty feed says (rather than a bare header row).
WAITING_TEXT = "Waiting for activity\u2026 New and changed tickets appear here as they happen."
STATUS_TEXT = {
    "off": "Live updates off",
    "connecting": "Connecting to live updates...",
    "live": "\u25cf Live",
    "paused": "Live updates paused, reconnecting...",
}


def feed_row(event: Event, tz: ZoneInfo) -> tuple[str, ...]:
    """One feed line; the time in the municipality's time zone."""
    return (
        event.occurred_at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        TYPE_LABELS.get(event.type, event.type),
        event.tracking_number,
        event.category,
        event.ward_id or "(no ward)",
        event.status.replace("_", " "),
    )


def formatted(event: Event, tz: ZoneInfo) -> tuple[tuple[str, ...], str]:
    """The feed line of ``event`` and its escaped table row, computed once per process.

    The hub hands the same Event object to every session that may see it, so
    the result is kept on that object (by time zone): 200 sessions showing one
    event format it once. Keyed by the object itself, never by a field a
    publisher chose, so one event's line can never stand in for another's.
    """
    cache = event.__dict__.get("_feed_lines")
    if cache is None:
        cache = {}
        object.__setattr__(event, "_feed_lines", cache)  # frozen dataclass: a display cache only
    line = cache.get(tz.key)
    if line is None:
        row = feed_row(event, tz)
        line = cache[tz.key] = (row, "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>")
    return line


class LiveFeed(pn.viewable.Viewer):
    """Newest first, at most ``max_rows`` lines (older ones roll off)."""

    store = param.ClassSelector(class_=DashboardStore, doc="The session's store: its scope's time zone, its live_status.")
    max_rows = param.Integer(default=50, bounds=(1, 1000))

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._rows: list[tuple[str, ...]] = []
        self._html_rows: list[str] = []
        #: Events shown since the session started (rolled-off ones included).
        self.received = 0
        # A Bokeh Div set directly, not a Panel HTML pane: every session's feed changes
        # twice a second in a busy municipality, and a pane update re-resolves Panel's
        # design and stylesheets each time (measured at 200 sessions a process: over a
        # third of the event loop). The text is our own markup with every cell escaped.
        self._div = Div(text=self._html(), sizing_mode="stretch_width", disable_math=True,
                        css_classes=["opsdash-live-feed"])
        # The styles go on the pane: Panel's design replaces a wrapped Bokeh model's own stylesheets
        # with the design's plus the pane's (panel/theme/base.py), so the Div's were never applied.
        self._table = pn.pane.Bokeh(self._div, sizing_mode="stretch_width", stylesheets=[FEED_CSS])
        self._status = pn.pane.Str(self._status_text(), css_classes=["opsdash-live-status"])
        if self.store is not None:
            self.store.param.watch(self._on_status, "live_status")

    @property
    def timezone(self) -> ZoneInfo:
        scope = getattr(self.store, "scope", None)
        return ZoneInfo(getattr(scope, "timezone", None) or "Africa/Johannesburg")

    def _status_text(self) -> str:
        status = getattr(self.store, "live_status", "off") if self.store is not None else "off"
        return STATUS_TEXT.get(status, STATUS_TEXT["off"])

    def _on_status(self, *_events) -> None:
        self._status.object = self._status_text()

    def _html(self) -> str:
        """The table, every cell escaped: event fields are text, never markup.

        Built by hand rather than with pandas' to_html, and each row escaped
        once: a busy municipality re-renders every session's feed twice a second.
        """
        head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
        body = "".join(self._html_rows) or f'<tr><td class="opsdash-feed-empty" colspan="{len(COLUMNS)}">{WAITING_TEXT}</td></tr>'
        # The scroll box can take the keyboard focus (axe-core "scrollable-region-focusable"); about
        # eight lines high, so the ticket table follows it on screen.
        return ('<div class="opsdash-feed-scroll" tabindex="0" role="region" aria-label="Live activity">'
                f'<table class="opsdash-feed-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')

    def add(self, events: Iterable[Event]) -> None:
        """Show ``events`` (oldest first, as drained) on top of the feed, in one update."""
        events = list(events)
        if not events:
            return
        tz = self.timezone
        # Only the newest max_rows can be seen: format no more than those.
        new = [formatted(e, tz) for e in reversed(events[-self.max_rows:])]
        self._rows = ([row for row, _ in new] + self._rows)[: self.max_rows]
        self._html_rows = ([html for _, html in new] + self._html_rows)[: self.max_rows]
        self.received += len(events)
        self._div.text = self._html()  # within the session's periodic callback: one patch to the browser

    @property
    def rows(self) -> list[tuple[str, ...]]:
        return list(self._rows)

    @property
    def html(self) -> str:
        """The markup the browser shows (every event field escaped)."""
        return self._div.text

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(pn.pane.Markdown("### Live activity", margin=(0, 10)), self._status),
            self._table,
            sizing_mode="stretch_width",
        )
