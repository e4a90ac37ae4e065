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
from typing import Any
from urllib.parse import parse_qs, urlencode

import panel as pn
import param
from sqlalchemy import Engine

from components.charts import TicketCharts
from components.export import ExportButtons
from components.filters import FilterBar
from components.hidden_categories import HiddenCategoriesNotice
from components.kpis import KpiCards
from components.live_feed import LiveFeed
from components.store import DashboardStore
from components.store_view import text
from components.table import TicketTable
from data.errors import InvalidFilter
from data.filters import TicketFilters
from data.models import Role
from data.scope import Scope, scope_for_user

from .export_route import export_link, token_secret
from .live import attach_live
from .settings import get_engine, get_settings

log = logging.getLogger("opsdash.dashboard")

ACCENT = "#0b6e4f"
#: Without it phones lay the page out 980 px wide and shrink it (unreadable on a councillor's phone).
META_VIEWPORT = "width=device-width, initial-scale=1"
#: The phone's own fonts (as on the sign-in page): nothing to download, no request to another host.
PAGE_FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"  # unquoted: it goes into CSS through HTML escaping
#: URL query keys the dashboard reads (``TicketFilters.to_query`` writes the same).
URL_KEYS = ("status", "category", "ward", "from", "to", "q")
UPDATING_TEXT = "Updating\u2026"
UPDATING_CSS = """.opsdash-updating-note { visibility: hidden; animation: opsdash-show 0s linear 0.4s forwards; }
@keyframes opsdash-show { to { visibility: visible; } }"""
LIVE_TEXT = {"off": "\u25cb Live off", "connecting": "\u25cc Connecting", "live": "\u25cf Live",
             "paused": "\u25cc Reconnecting"}


def is_phone(user_agent: str | None) -> bool:
    """MDN's advice: "Mobi" in the User-Agent means a phone-sized device."""
    return "Mobi" in (user_agent or "")


def role_label(scope: Scope) -> str:
    return scope.role.value.replace("_", " ")


def filters_from_url(search: str) -> dict[str, str]:
    """The known filter keys of a URL query string (others, e.g. tracking tags, are ignored)."""
    parsed = parse_qs(search.lstrip("?"), keep_blank_values=False)
    return {k: v[-1] for k, v in parsed.items() if k in URL_KEYS and v}


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
    engine = param.Parameter(default=None, doc="SQLAlchemy Engine; default: the configured database.")
    store = param.ClassSelector(class_=DashboardStore, doc="Built from username + engine when not given.")
    title = param.String(default="OpsDash")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.store is None:
            if self.engine is None:
                self.engine = get_engine()
            if not self.username:
                raise TypeError("Dashboard needs a username (or a store)")
            # NotAuthorized propagates: unknown user, disabled, no dashboard role.
            self.store = DashboardStore(scope=scope_for_user(self.engine, self.username), engine=self.engine)
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
        return pn.pane.HTML(pn.bind(LIVE_TEXT.get, self.store.param.live_status),
                            css_classes=["opsdash-live-indicator"], styles={"color": "white", "white-space": "nowrap"},
                            margin=(0, 8))

    def _on_error(self, *_events) -> None:
        self._banner.object = self.store.error  # fixed text from components.store, never citizen data
        self._banner.visible = self._retry.visible = bool(self.store.error)

    def sidebar(self) -> list[pn.viewable.Viewable]:
        return [pn.pane.Markdown("### Filters"), self.filter_bar, self.export_area]

    def main(self) -> list[pn.viewable.Viewable]:
        return [
            pn.Row(self._banner, self._retry, sizing_mode="stretch_width"),
            *([self.hidden_categories] if self.scope.role is Role.ADMIN else []),
            self.kpis,
            self.charts,
            pn.pane.Markdown("### Tickets", margin=(10, 10, 0, 10)),
            self.table,
            self.live_area,
        ]

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
            who = text(self.who(), css_classes=["opsdash-who"], margin=(0, 8), styles={
                "color": "white", "white-space": "nowrap", "overflow": "hidden", "text-overflow": "ellipsis",
                "max-width": "40vw"})
            header = [self.live_indicator(),
                      pn.pane.HTML('<a href="./logout" style="color:white">Sign out</a>', margin=(0, 8))]
            main = self.main()
            if phone:  # the header has room for little on a phone: who/where opens the page instead
                who.styles = {"font-weight": "600", "white-space": "normal"}
                main[:0] = [who, self.updating_indicator(color="#555")]
            else:
                header[:0] = [who, self.updating_indicator()]
            self._template = pn.template.FastListTemplate(
                title=self.title, sidebar=self.sidebar(), main=main, header=header,
                accent=ACCENT, header_background=ACCENT, sidebar_width=300, main_layout=None,
                meta_viewport=META_VIEWPORT, theme_toggle=False,  # charts and cards are styled for light only
                font=PAGE_FONT,
                collapsed_sidebar=phone,  # filters open from the menu button instead of taking 300 px
            )
        return self._template

    # -- served sessions ---------------------------------------------------------------
    def connect_session(self) -> None:
        """Per-session wiring when served: filters <-> URL (then live updates, issue 3)."""
        self.sync_url()
        self.live_session = attach_live(self.store, self.live_feed)

    def sync_url(self) -> None:
        """Apply the page URL's filters, then keep the URL in step with the filters.

        The URL only ever feeds ``store.set_filters``: it can narrow the view,
        never widen the Scope (a councillor's ``ward=`` is dropped there).
        """
        location = pn.state.location
        if location is None:
            return
        values = filters_from_url(location.search or "")
        if values:
            try:
                self.store.set_filters(**values)
            except InvalidFilter as exc:
                self.notify(f"The link's filters were not applied: {exc}")
        # The browser reports its own URL once the page has loaded, which would
        # overwrite a rewrite made now: show what was applied after that.
        pn.state.onload(self._write_url)
        self.store.param.watch(lambda *_: self._write_url(), "filters")

    def _write_url(self) -> None:
        location = pn.state.location
        if location is None:
            return
        query = self.store.filters.to_query()
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
