"""Dashboard: the whole operations view of one signed-in user.

One set of classes serves ``opsdash serve`` and Jupyter: in a notebook
``Dashboard(username=...)`` (or ``Dashboard.for_user(engine, username)``)
displays inline; served, ``.servable()`` returns the FastListTemplate.

The Scope is built here on the server from the users table; nothing the
browser sends (widgets, URL) can change it.
"""
from __future__ import annotations

import html
import logging
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode

import panel as pn
import param
from bokeh.models import CustomJS, Div
from panel.io.location import Location
from sqlalchemy import Engine

from components.charts import TicketCharts
from components.export import ExportButtons
from components.filter_state import URL_KEYS
from components.filters import FilterBar
from components.hidden_categories import HiddenCategoriesNotice
from components.kpis import KpiCards
from components.live_feed import LiveFeed
from components.panel_compat import PAGE_A11Y_JS, AccessibleFastListTemplate
from components.store import DashboardStore
from components.store_view import text
from components.table import TicketTable
from components.unfold import UnfoldCard
from data.filters import TicketFilters
from data.models import Role
from data.replica import ReadRoute
from data.scope import Scope, scope_for_user

from .export_route import export_link, token_secret
from .live import LIVE_SCRIPT_PATH, LIVE_SCRIPT_VERSION, attach_live
from .operations import OPERATIONS_VIEW
from .settings import get_engine, get_read_route, get_settings

log = logging.getLogger("opsdash.dashboard")

ACCENT = "#0b6e4f"
#: Without it phones lay the page out 980 px wide and shrink it (unreadable on a councillor's phone).
META_VIEWPORT = "width=device-width, initial-scale=1"
#: The phone's own fonts (as on the sign-in page): nothing to download, no request to another host.
PAGE_FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"  # unquoted: it goes into CSS through HTML escaping
UPDATING_TEXT = "Updating\u2026"
UPDATING_CSS = """.opsdash-updating-note { visibility: hidden; animation: opsdash-show 0s linear 0.4s forwards; }
@keyframes opsdash-show { to { visibility: visible; } }"""
#: A phone (narrower than the 300 px filters plus a readable page): the opened menu lies over the
#: page instead of squeezing it into a 90 px column; the header's text may take two lines.
PHONE_CSS = """
@media (max-width: 700px) {
  #content { position: relative; }
  #sidebar:not(.hidden) { position: absolute; z-index: 20; top: 0; left: 0; bottom: 0; height: auto;
                          background-color: white; box-shadow: 2px 0 12px rgba(0, 0, 0, 0.35); }
  #main { padding: 0 6px; }
}
.opsdash-lead { margin: 10px 10px 0 10px; font-weight: 600; line-height: 1.25; }
"""
#: The server's view of live updates (its hub); the browser's script (``assets/live_status.js``)
#: overrides it with "Reconnecting…" / "Offline" whenever the server's heartbeats stop arriving.
LIVE_TEXT = {"off": "\u25cb Live off", "connecting": "\u25cc Connecting", "live": "\u25cf Live",
             "paused": "\u25cc Reconnecting"}


def live_markup(status: str) -> str:
    """The indicator: a polite status region; ``data-server`` is what the script restores once beats return."""
    shown = LIVE_TEXT.get(status, LIVE_TEXT["off"])
    return f'<span class="opsdash-live" role="status" aria-live="polite" data-server="{shown}">{shown}</span>'


def is_phone(user_agent: str | None) -> bool:
    """MDN's advice: "Mobi" in the User-Agent means a phone-sized device."""
    return "Mobi" in (user_agent or "")


def role_label(scope: Scope) -> str:
    return scope.role.value.replace("_", " ")


def export_buttons(store: DashboardStore) -> ExportButtons:
    """"Download CSV" / "Download Excel", wired to this server's settings and streaming route (when large)."""
    secret, username = token_secret(), store.scope.username
    root = pn.state.rel_path or "."  # read now: it belongs to the session being built
    link = None
    if secret and username:  # no cookie secret (a notebook): FileDownload only
        def link(fmt: str, filters: TicketFilters) -> str:
            return export_link(secret, username, fmt, filters, root)
    return ExportButtons(store=store, large_export_rows=get_settings().large_export_rows, download_link=link)


class Dashboard(pn.viewable.Viewer):
    """Filters, KPI cards, charts, ticket table and the live feed of one user's scope."""

    username = param.String(default=None, allow_None=True, doc="Whose dashboard (a users-table username).")
    engine = param.Parameter(default=None, doc="SQLAlchemy Engine; default: the configured database (the primary).")
    reads = param.ClassSelector(class_=ReadRoute, default=None, allow_None=True, doc=(
        "Where figures, pages and exports read; default with the configured database: its read route "
        "(OPSDASH_READ_DATABASE_URL), with a given engine: that engine."))
    store = param.ClassSelector(class_=DashboardStore, doc="Built from username + engine when not given.")
    title = param.String(default="OpsDash")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.store is None:
            if self.engine is None:
                self.engine = get_engine()
                if self.reads is None:
                    self.reads = get_read_route()
            if not self.username:
                raise TypeError("Dashboard needs a username (or a store)")
            # NotAuthorized propagates: unknown user, disabled, no dashboard role.
            self.store = DashboardStore(scope=scope_for_user(self.engine, self.username), engine=self.engine,
                                        reads=self.reads)
        self.filter_bar = FilterBar(store=self.store)
        self.kpis = KpiCards(store=self.store)
        self.hidden_categories = HiddenCategoriesNotice(store=self.store)
        self.charts = TicketCharts(store=self.store)
        self.table = TicketTable(store=self.store)

        # ---- LIVE FEED AREA (issue 3) -------------------------------------------------
        # The live-events work puts its LiveFeed(store=self.store) into this column
        # (and wires it in ``connect_session``); the dashboard itself owns no live state.
        self.live_feed = LiveFeed(store=self.store)
        self.live_area = pn.Column(self.live_feed, sizing_mode="stretch_width", css_classes=["opsdash-live-area"])
        # ---- EXPORT AREA (issue 5) ------------------------------------------------------
        self.export = export_buttons(self.store)
        self.export_area = pn.Column(self.export, sizing_mode="stretch_width", css_classes=["opsdash-export-area"])

        self._banner = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width",
                                     css_classes=["opsdash-error-banner"])
        self._retry = pn.widgets.Button(label="Retry", color="danger", visible=False, width=90)
        self._retry.on_click(lambda *_: self.store.retry())
        self.store.param.watch(self._on_error, "error")
        self._on_error()  # a view may already have failed while being built
        self._template: pn.template.BaseTemplate | None = None
        # The heartbeat the page's script listens for: a hidden Bokeh model changed every few
        # seconds (a Bokeh Div set directly: a Panel pane would re-resolve its stylesheets each beat).
        self._beat = Div(text="0", visible=False, css_classes=["opsdash-heartbeat"])

    @classmethod
    def for_user(cls, engine: Engine, username: str, **params: Any) -> "Dashboard":
        return cls(engine=engine, username=username, **params)

    @property
    def scope(self) -> Scope:
        return self.store.scope

    # -- pieces --------------------------------------------------------------------
    def who(self) -> str:
        """Header text: municipality, user, role and, for a councillor, the ward."""
        scope = self.scope
        parts = [scope.municipality_name or str(scope.municipality_id), scope.username or "", role_label(scope)]
        if scope.is_councillor:
            parts.append(f"ward {scope.ward_id}")
        return " \u00b7 ".join(p for p in parts if p)

    def updating_indicator(self, color: str = "white") -> pn.viewable.Viewable:
        """"Updating" while views load new figures (their previous ones stay on screen meanwhile).

        The note shows only once a load has taken 0.4 s (CSS), so the quick
        refreshes live events cause do not make a wall screen blink.
        """
        # Fixed size: nothing shifts when the note comes and goes. Fixed markup, no data in it.
        note = f'<span class="opsdash-updating-note" role="status">{UPDATING_TEXT}</span>'
        return pn.pane.HTML(pn.bind(lambda n: note if n else "", self.store.param.updating),
                            css_classes=["opsdash-updating"], width=90, height=20, margin=(0, 8),
                            stylesheets=[UPDATING_CSS],
                            styles={"color": color, "white-space": "nowrap", "font-style": "italic"})

    def live_indicator(self) -> pn.viewable.Viewable:
        """Live / Reconnecting / Offline: the server's hub state, honest only while its heartbeats arrive."""
        return pn.pane.HTML(pn.bind(live_markup, self.store.param.live_status), css_classes=["opsdash-live-indicator"],
                            styles={"color": "white", "white-space": "nowrap"}, margin=(0, 8))

    def heartbeat_view(self) -> pn.viewable.Viewable:
        """Hidden; on the page only so that its changes reach the browser."""
        return pn.pane.Bokeh(self._beat, visible=False, margin=0)

    def heartbeat(self) -> None:
        self._beat.text = str(int(self._beat.text) + 1)

    def _on_error(self, *_events) -> None:
        self._banner.object = self.store.error  # fixed text from components.store, never citizen data
        self._banner.visible = self._retry.visible = bool(self.store.error)

    def sidebar(self) -> list[pn.viewable.Viewable]:
        return [pn.pane.Markdown("### Filters"), self.filter_bar, self.export_area]

    def main(self, phone: bool = False) -> list[pn.viewable.Viewable]:
        """The figures, the live feed and the tickets.

        The feed comes under the cards, in view when the page opens (below the 25-row table it
        was out of view; at most ~8 lines high); on a phone it waits folded there, one tap to open
        (built only once opened: ``UnfoldCard``). The first parts are one column: the template
        puts a margin around each part (a ~130 px gap above the cards on a phone).
        """
        top = pn.Column(pn.Row(self._banner, self._retry, sizing_mode="stretch_width"),
                        *([self.hidden_categories] if self.scope.role is Role.ADMIN else []),
                        self.kpis, sizing_mode="stretch_width", margin=0)
        tickets = [pn.pane.Markdown("### Tickets", margin=(10, 10, 0, 10)), self.table]
        if phone:
            # Folded, and built in the browser only once opened (components.unfold): hidden, the
            # feed was still drawn, and redrawn at each event, by the phone's CPU.
            live = UnfoldCard(view=self.live_area, title="Live activity", css_classes=["opsdash-live-card"])
            return [top, live, self.charts, *tickets]
        return [top, self.live_area, self.charts, *tickets]

    def __panel__(self) -> pn.viewable.Viewable:
        """The notebook view: header line, sidebar column, main column."""
        return pn.Column(
            text(self.who(), styles={"font-weight": "600"}),
            pn.Row(pn.Column(*self.sidebar(), width=280), pn.Column(*self.main(), sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    def template(self) -> pn.template.BaseTemplate:
        """The served page (built once per session)."""
        if self._template is None:
            phone = is_phone((pn.state.headers or {}).get("User-Agent"))
            # Two lines rather than cut off: who, where and which ward matter (a councillor's ward above all).
            who = text(self.who(), css_classes=["opsdash-who"], margin=(0, 8), styles={
                "color": "white", "white-space": "normal", "font-size": "0.85em", "line-height": "1.25",
                "max-width": "45vw"})
            header = [self.live_indicator(), self.heartbeat_view(),
                      pn.pane.HTML('<a href="./logout" style="color:white">Sign out</a>', margin=(0, 8))]
            if self.scope.role is Role.ADMIN:  # nobody else sees the link (nor gets the page: pages.py)
                header.insert(-1, pn.pane.HTML(f'<a href="./?view={OPERATIONS_VIEW}" style="color:white">Operations</a>',
                                               margin=(0, 8), css_classes=["opsdash-operations-link"]))
            main = self.main(phone=phone)
            if phone:  # the header has room for little on a phone: who/where opens the page instead,
                # as text in the page itself (``opsdash_lead``): it paints with the header, before the scripts.
                main[0].objects[:0] = [self.updating_indicator(color="#555")]
            else:
                header[:0] = [who, self.updating_indicator()]
            self._template = AccessibleFastListTemplate(
                title=self.title, sidebar=self.sidebar(), main=main, header=header,
                accent=ACCENT, header_background=ACCENT, sidebar_width=300, main_layout=None,
                meta_viewport=META_VIEWPORT, theme_toggle=False,  # charts and cards are styled for light only
                font=PAGE_FONT,
                collapsed_sidebar=phone,  # filters open from the menu button instead of taking 300 px
            )
            # Live state from heartbeats and automatic recovery (issue 17), from this server only.
            root = (pn.state.rel_path or ".").rstrip("/") or "."
            self._template.config.js_files["opsdash_live"] = f"{root}{LIVE_SCRIPT_PATH}?v={LIVE_SCRIPT_VERSION}"
            self._template.config.raw_css.append(PHONE_CSS)
            if phone:
                self._template.set_lead(self.who())
            doc = pn.state.curdoc
            if doc is not None and doc.session_context is not None:
                doc.js_on_event("document_ready", CustomJS(code=PAGE_A11Y_JS))  # screen readers, keyboards: see its comment
        return self._template

    # -- served sessions ---------------------------------------------------------------
    def connect_session(self) -> None:
        """Per-session wiring when served: filters <-> URL (then live updates, issue 3)."""
        self.sync_url()
        self.live_session = attach_live(self.store, self.live_feed, heartbeat=self.heartbeat)

    def sync_url(self, location: Location | None = None) -> None:
        """The filter inputs <-> the URL query, by Panel's ``Location.sync``.

        Panel reads the page's link into ``store.state`` (a value the state
        refuses is reported by ``_url_refused`` and the rest applies) and
        writes each change back. The URL only ever feeds ``store.state``: it
        can narrow the view, never widen the Scope; a councillor's ``ward`` is
        not synced at all (their state's ward is fixed) and leaves the link.
        """
        location = location or pn.state.location
        if location is None:
            return
        keys = {name: key for name, key in URL_KEYS.items()
                if name != "wards" or self.scope.sees_whole_municipality}
        self._location, self._url_keys, self._url_refusal = location, keys, ""
        location.sync(self.store.state, keys, on_error=self._url_refused)
        # Panel's Location.update_query only adds or replaces keys (panel/io/location.py, 1.9 and
        # 1.10), so a filter that was cleared would stay as ``status=`` and a key we do not read
        # (a councillor's ward, a refused value) as it was; and once the page has loaded the
        # browser reports the link it opened, which replaces what was written meanwhile. One
        # watcher keeps the query to what is applied, in the old links' spelling.
        location.param.watch(self._tidy_url, "search")
        self._tidy_url()

    def _url_refused(self, values: dict[str, Any]) -> None:
        """Apply the link's values the state accepts, in one update, and say which were not applied."""
        state, problems = self.store.state, []
        with param.parameterized.batch_call_watchers(state):  # one change of the filters for all of them
            for name, value in values.items():
                try:
                    setattr(state, name, state.param[name].deserialize(value))
                except Exception as exc:  # the parameter's own message
                    problems.append(f"{self._url_keys.get(name, name)}: {exc}")
        message = "The link's filters were partly not applied: " + "; ".join(problems)
        # The browser reports the same link again once the page has loaded: say it once.
        if problems and message != self._url_refusal:
            self._url_refusal = message
            # Once the page has loaded: one made while the page is being built never shows.
            pn.state.onload(partial(self.notify, message))

    def _tidy_url(self, *_events: Any) -> None:
        location = self._location
        state = self.store.state
        ours = {key: state.param[name].serialize(getattr(state, name)) for name, key in self._url_keys.items()}
        query = [(k, v) for k, v in parse_qsl((location.search or "").lstrip("?")) if k not in URL_KEYS.values()]
        query += [(k, v) for k, v in ours.items() if v]
        search = "?" + urlencode(query) if query else ""
        if (location.search or "") != search:
            location.search = search

    def notify(self, text: str, kind: str = "warning") -> None:
        notifications = pn.state.notifications
        if notifications is not None:
            # The notification widget renders HTML: escape what we pass.
            getattr(notifications, kind)(html.escape(text), duration=8000)

    def servable(self, title: str | None = None, location: bool = True, area: str = "main",
                 target: str | None = None) -> pn.viewable.Viewable:
        if pn.state.served:
            self.connect_session()
            return self.template().servable(title=title or self.title, location=location)
        return super().servable(title=title, location=location, area=area, target=target)
