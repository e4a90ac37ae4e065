"""Every use OpsDash makes of Panel's, Bokeh's and Tornado's internals, in this one module (issue 16).

Each hook names what it relies on and the public alternative that is
missing. ``tests/test_panel_compat.py`` checks every one against the
installed Panel/Bokeh (it fails with what to look at when an upgrade moves
one) and walks the product code with ``ast``: a private name of theirs used
anywhere else fails it. Run with panel 1.9.4 + bokeh 3.9.2; every name was
also read in panel 1.10's source (it pairs with bokeh 3.10). pyproject.toml
pins those pairs.

Widgets and pages:
1. ``PagedTabulator``: a Tabulator holding one page of rows paged in SQL.
2. ``OptionalFileDownload``: a FileDownload whose callback may send nothing.
3. ``serve_pages_without_mathjax``: no MathJax bundle in served pages;
   ``serve_pages_without_webgl``, ``serve_pages_without_google_fonts``,
   ``serve_pages_scripts_after_first_paint``: lighter pages, no third-party host (issue 17).
4. ``models_frozen``: add a page's roots to a document in one model walk.
4a. ``AccessibleFastListTemplate`` and ``PAGE_A11Y_JS``: landmarks and ARIA roles
    axe-core asks for that Panel's template and Tabulator's markup lack (issue 17).
4b. ``rehearse_page_parts``: a page's kinds of parts built once at server start, unserved.

Sign-in (dashboard_app/auth.py, web_session.py):
5. ``validate_next_url``, ``login_endpoint``, ``encode_id_token`` / ``decode_id_token``.

The server (issue 15's security hooks; dashboard_app/panel_fence.py says why each one and wires them):
6. ``forget_bokeh_secret_key``, ``restrict_component_resources``,
   ``refuse_nul_in_static_paths``, ``add_page_token_claims``,
   ``confirm_authenticated_users``, ``add_response_transform``,
   ``close_session_connections``.

Logs (dashboard_app/log_format.py, issue 19):
7. ``current_document``: the session a log line is written for.

Public API is used instead where it exists: ``PeriodicCallback(background=True)``
(dashboard_app/live.py), Bokeh's ``Application.process_request`` contract,
Tornado's ``OutputTransform``.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Iterator

import jinja2
import pandas as pd
import panel as pn
import param
from bokeh.document import Document
from bokeh.embed import wrappers as bokeh_wrappers
from bokeh.resources import Resources as BokehResources
from bokeh.server.tornado import BokehTornado
from bokeh.settings import settings as bokeh_settings
from panel.io import resources as panel_resources
from panel.io.application import Application
from panel.io.server import ComponentResourceHandler
from panel.io.state import state
from panel.template import FastListTemplate
from panel.theme.fast import Fast
from panel.util import base64url_encode, decode_token
from tornado.web import HTTPError, RequestHandler, StaticFileHandler


log = logging.getLogger("opsdash.panel_compat")

# ---- 1. a Tabulator paged in SQL -------------------------------------------------------------------

class PagedTabulator(pn.widgets.Tabulator):
    """A Tabulator whose ``value`` is only the current page of ``total_rows`` (paged and sorted elsewhere).

    With ``pagination='remote'`` Panel's Tabulator holds the whole frame and pages it on
    the server. Here the owner answers the browser's ``page`` and ``sorters`` with one
    page (SQL LIMIT/OFFSET + ORDER BY) and sets ``total_rows``, so the browser's pager
    still shows every page; a new ``total_rows`` alone recounts the pages (the table's
    rows and its total load apart). Private: ``Tabulator._rename`` (which parameters reach the
    browser), ``_length`` (rows for the page count), ``_update_max_page`` (the count), ``_get_data`` /
    ``_process_df_and_convert_to_cds`` (the rows sent) and ``_sort_df`` (Panel's own
    sort). Public alternative missing: Tabulator has no documented data-source hook;
    ``pagination='remote'`` always slices a complete ``value``.
    """

    total_rows = param.Integer(default=0, bounds=(0, None), doc="Rows over all pages (from SQL).")

    _rename = {**pn.widgets.Tabulator._rename, "total_rows": None}  # server-side only

    @property
    def _length(self) -> int:
        return max(self.total_rows, 0 if self.value is None else len(self.value))

    def _get_data(self):
        if self.pagination != "remote" or self.value is None:
            return super()._get_data()
        # ``value`` is already the requested page in the requested order.
        return self._process_df_and_convert_to_cds(self.value)

    def _sort_df(self, df: pd.DataFrame) -> pd.DataFrame:
        return df  # sorted by the database, across all pages

    @param.depends("total_rows", watch=True)
    def _count_pages(self) -> None:
        if self.pagination:
            self._update_max_page()  # Panel recounts on a new value or page size only


# ---- 2. a FileDownload that may send nothing ---------------------------------------------------------

class OptionalFileDownload(pn.widgets.FileDownload):
    """A FileDownload whose ``callback`` may return None: nothing is sent (the export was refused or failed).

    Private: ``FileDownload._sync_data(fileobj)``, which Panel's click handling calls with
    the callback's result (for a coroutine callback too). Public alternative missing: the
    documented ``callback`` must return a file; None raises ValueError and logs a traceback.
    """

    def _sync_data(self, fileobj: Any) -> None:
        if fileobj is not None:
            super()._sync_data(fileobj)


# ---- 3. served pages without MathJax --------------------------------------------------------------

def serve_pages_without_mathjax() -> bool:
    """Leave Bokeh's MathJax bundle out of every page this process serves; False when this Panel cannot.

    Panel adds it (1.8 MB of JavaScript, the page's largest file, 28 % of its scripts)
    to every page holding an HTML or Markdown pane, in case one holds LaTeX. Ours never
    do: fixed headings, and citizen text escaped into HTML panes that render no math.
    Without it a first visit downloads 4.6 MB instead of 6.4 MB: paired sign-ins, 6
    rounds, 1.45 s -> 1.32 s median, faster in all 6 (docs/performance.md). Private:
    ``panel.io.resources._panel_use_mathjax(roots)``, replaced process-wide (call it at
    server start only). Public alternative missing: ``bundle_resources(enable_mathjax=)``
    exists, but Panel's server always calls it with ``'auto'``.
    """
    if not callable(getattr(panel_resources, "_panel_use_mathjax", None)):
        return False
    panel_resources._panel_use_mathjax = lambda roots: False
    return True


# ---- 3b. lighter served pages (issue 17) --------------------------------------------------------
# Each is applied once at server start (dashboard_app/server.start); a name that moved makes it
# log a warning and do nothing (the page is heavier, never broken); test_panel_compat notices.

def serve_pages_without_webgl() -> bool:
    """Leave Bokeh's WebGL bundle (bokeh-gl.min.js) out of served pages; False when this Bokeh cannot.

    Bokeh itself adds it only to pages whose plots ask for WebGL; Panel adds it to
    every page. Our figures never ask (``components.charts``: canvas, the default;
    a test holds them to it): 194 KB of JavaScript, 49 KB brotli-compressed, that
    a councillor's phone downloads and parses for nothing (docs/performance.md,
    "Page weight"). Bokeh has no setting for the default bundle list.
    """
    defaults = getattr(BokehResources, "_default_components", None)
    if not isinstance(defaults, list):
        log.warning("this Bokeh lists its bundles differently: served pages keep bokeh-gl.min.js")
        return False
    BokehResources._default_components = [c for c in defaults if c != "bokeh-gl"]
    return True


def serve_pages_without_google_fonts() -> bool:
    """The Fast design without its Google Fonts link (Open Sans); False when this Panel cannot.

    Every page asked fonts.googleapis.com (and so fonts.gstatic.com) for it: staff
    addresses leaked to an outside host, and pages hung on networks that block it.
    Our templates name system fonts instead (``dashboard_app.dashboard.PAGE_FONT``): nothing to
    download, and text shows at once. Panel links it from its design's resource
    list, which has no public setting.
    """
    design_resources = getattr(Fast, "_resources", None)
    if not isinstance(design_resources, dict) or "font" not in design_resources:
        log.warning("this Panel's Fast design lists its fonts differently: check the page for fonts.googleapis.com")
        return False
    Fast._resources = {kind: value for kind, value in design_resources.items() if kind != "font"}
    return True


#: What a served page loads only once the browser has painted its own HTML (the header and the
#: who/where line): every script file, the Fast design's modules, and the stylesheets its widgets
#: use. Panel writes ~850 KB (compressed) of scripts into the head; a phone painted nothing until all
#: had arrived and run, and with ``defer`` the browser still ran them before its first frame
#: whenever they arrived with the HTML (on a fast link, from its cache): Lighthouse's simulation
#: then counted all of them into the first paint (FCP 2.4 s or 6.4 s from run to run, LCP up to
#: 9 s; docs/performance.md, "Page weight"). The page's ``<script>``s push to ``opsdashLater``;
#: the loader (``LATER_JS_RESOURCES``) adds them once the browser reports the page's first
#: largest paint (or first paint where it reports no largest one), at once in a hidden tab, which
#: paints nothing, and after 5 s whatever happens. Script files run in their order
#: (``async = false``); ``opsdashScriptsReady`` settles when everything has loaded, and Panel's
#: snippets, the Fast design's set-up (``TEMPLATE_FIXES``) and Bokeh's embed script
#: (``SCRIPTS_READY_ONLOAD``) wait for it instead of DOMContentLoaded.
LATER_QUEUE_JS = "window.opsdashLater = window.opsdashLater || {styles: [], modules: []};"

#: Bokeh's ``css_resources.html``: its stylesheets (Tabulator's, the notifications', icons') wait too.
LATER_CSS_RESOURCES = jinja2.Template("""<script type="text/javascript">
""" + LATER_QUEUE_JS + """
opsdashLater.styles.push(...{{ css_files | map("string") | list | tojson }});
</script>
{%- for css in css_raw %}
<style>
  {{ css }}
</style>
{%- endfor %}
""")

#: Panel's ``js_resources.html`` with the loader instead of its ``<script src>`` and module tags.
LATER_JS_RESOURCES = jinja2.Template("""<script type="esms-options">{"shimMode": true}</script>
<script type="text/javascript">
""" + LATER_QUEUE_JS + """
opsdashLater.modules.push(...{{ js_modules | map("string") | list | tojson }});
window.opsdashScriptsReady = new Promise(resolve => {
  const files = {{ js_files | map("string") | list | tojson }};
  let started = false;
  const add = (tag, properties) => new Promise(done => {
    const element = Object.assign(document.createElement(tag), properties);
    element.onload = element.onerror = done;
    document.head.appendChild(element);
  });
  const load = () => {
    if (started) return;
    started = true;
    const loading = [
      ...[...new Set(opsdashLater.styles)].map(href => add("link", {rel: "stylesheet", href})),
      ...[...new Set(opsdashLater.modules)].map(src => add("script", {type: "module", src})),
      ...files.map(src => add("script", {src, async: false})),
    ];
    Promise.all(loading).then(() => resolve());
  };
  if (document.visibilityState === "hidden") { load(); return; }
  setTimeout(load, 5000);
  const types = (window.PerformanceObserver && PerformanceObserver.supportedEntryTypes) || [];
  const type = ["largest-contentful-paint", "paint"].find(name => types.includes(name));
  if (type) new PerformanceObserver((_, observer) => { observer.disconnect(); setTimeout(load, 0); })
    .observe({type, buffered: true});
  else requestAnimationFrame(() => setTimeout(load, 0));
});
</script>
{%- for name, file in js_module_exports.items() %}
<script type="module">
  import {{ name }} from "{% if not file.startswith('http') %}./{% endif %}{{ file }}";
  window.{{ name }} = {{ name }}
</script>
{%- endfor %}
{%- for js in js_raw %}
<script type="text/javascript">
window.opsdashScriptsReady.then(() => {
  {{ js }}
});
</script>
{%- endfor %}
""")

#: Bokeh's embed script runs its code once ``opsdashScriptsReady`` (above) has settled; a page
#: without the loader (none of ours) keeps Panel's own wait for DOMContentLoaded.
SCRIPTS_READY_ONLOAD = """\
(function() {
  const fn = function() {
%(code)s
  };
  if (window.opsdashScriptsReady) window.opsdashScriptsReady.then(fn);
  else if (document.readyState != "loading") fn();
  else document.addEventListener("DOMContentLoaded", fn, {once: true});
})();\
"""


def serve_pages_scripts_after_first_paint() -> bool:
    """Paint a served page's own HTML before its scripts load and run; False when this Panel cannot.

    Replaces Panel's ``panel.io.resources.JS_RESOURCES`` and ``BkCSS_RESOURCES`` templates and
    the ``bokeh.embed.wrappers._ONLOAD`` wrapper Panel itself replaces (see ``LATER_QUEUE_JS``);
    Panel has no setting for any of them. Called at server start only: a notebook's output keeps
    Panel's own. Pages of ``AccessibleFastListTemplate`` load their queue themselves without it.
    """
    if (not isinstance(getattr(panel_resources, "JS_RESOURCES", None), jinja2.Template)
            or not isinstance(getattr(panel_resources, "BkCSS_RESOURCES", None), jinja2.Template)
            or "DOMContentLoaded" not in getattr(bokeh_wrappers, "_ONLOAD", "")):
        log.warning("this Panel renders its scripts differently: served pages load them as Panel does")
        return False
    panel_resources.JS_RESOURCES = LATER_JS_RESOURCES
    panel_resources.BkCSS_RESOURCES = LATER_CSS_RESOURCES
    bokeh_wrappers._ONLOAD = SCRIPTS_READY_ONLOAD
    return True


# ---- 4. one model walk per page ---------------------------------------------------------------------

@contextmanager
def models_frozen(doc: Document) -> Iterator[None]:
    """Bokeh re-walks every model of ``doc`` after each root added; inside this, once at the end.

    Relies on ``Document.models.freeze()`` (Bokeh's DocumentModelManager). Public in name,
    but Bokeh documents no way to batch adding roots and Panel's ``servable`` has none.
    """
    with doc.models.freeze():
        yield


# ---- 4a. accessible page structure (issue 17) ----------------------------------------------------

#: Panel's FastListTemplate markup -> ours. The sidebar's ``<ul>`` holds ``<div>``s, not ``<li>``s
#: (axe-core "list", serious: a screen reader announces a list of nothing); the page has no main
#: landmark nor any named region, so a screen-reader user cannot jump to the filters or the figures.
TEMPLATE_FIXES = {
    '<ul class="nav flex-column">': '<ul class="nav flex-column" role="none">',
    '<div class="sidenav {{\'hidden\' if collapsed_sidebar else \'\'}}" id="sidebar">':
        '<div class="sidenav {{\'hidden\' if collapsed_sidebar else \'\'}}" id="sidebar" role="region" aria-label="Filters">',
    # ``opsdash_lead`` (``AccessibleFastListTemplate.set_lead``): a line of text sent in the page itself, painted with
    # the header before any script has run (a phone's largest text came only with the Bokeh document).
    '<div class="main" id="main">': '<div class="main" id="main" role="main">'
        '{% if opsdash_lead %}<p class="opsdash-who opsdash-lead">{{ opsdash_lead | e }}</p>{% endif %}',
    # The page's name as its one top-level heading (the header looks the same).
    '<a class="title" href="" >{{ app_title }}</a>':
        '<h1 style="display:inline;font-size:inherit;font-weight:inherit;margin:0">'
        '<a class="title" href="" >{{ app_title }}</a></h1>',
    # The Fast design's set-up needs its modules, which load after the first paint (``LATER_QUEUE_JS``).
    "document.addEventListener('DOMContentLoaded', (event) => {":
        "(window.opsdashScriptsReady || new Promise(ready => document.addEventListener("
        "'DOMContentLoaded', ready, {once: true}))).then(() => {",
}

#: Panel's ``base/base.html`` postamble, but for what a first paint needs: the template's own and
#: the theme's stylesheets block it as before; the widgets' stylesheets and the Fast design's
#: modules join the queue loaded after it (``LATER_QUEUE_JS``), or load at once where no loader is.
LATER_POSTAMBLE = """
{% block postamble %}
    <!-- Template CSS -->
    {%- set later_styles = [] %}
    {%- for css in template_resources['css'].values() %}
    {%- if 'template/' in css | string or '/theme/' in css | string %}
    <link rel="stylesheet" href="{{ css }}">
    {%- else %}{% set _ = later_styles.append(css | string) %}{% endif %}
    {%- endfor %}
    <style>
    /* Until the Fast design's modules have loaded: no tooltip text in the header, the title at its size. */
    fast-tooltip:not(:defined) { display: none; }
    .title { font-size: var(--type-ramp-plus-3-font-size, 28px); }
    </style>
    <script type="text/javascript">
    (function (styles, modules) {
      if (window.opsdashLater) {
        opsdashLater.styles.push(...styles);
        opsdashLater.modules.push(...modules);
        return;
      }
      for (const href of styles) document.head.appendChild(Object.assign(document.createElement("link"), {rel: "stylesheet", href}));
      for (const src of modules) document.head.appendChild(Object.assign(document.createElement("script"), {type: "module", src}));
    })({{ later_styles | tojson }}, {{ template_resources['js_modules'].values() | map('string') | list | tojson }});
    </script>

    {{ self.custom_css() }}

    {% for raw_css in template_resources['raw_css'] %}
    <style type="text/css">
    {{ raw_css }}
    </style>
    {% endfor %}

    <!-- Template JS -->
    {% for src in template_resources['js'].values() %}
    <script src="{{ src }}"></script>
    {% endfor %}

    {{ self.custom_js() }}
{% endblock %}
"""


class _TemplateText:
    """What ``BasicTemplate.__init__`` reads of ``_template``: the text, and a path outside Panel's
    templates (``relative_to`` fails), so Panel parses the text itself; ``{% extends %}`` still
    resolves through Panel's own template loader."""

    def __init__(self, text: str) -> None:
        self._text = text

    def read_text(self, encoding: str = "utf-8") -> str:
        return self._text

    def relative_to(self, *_: Any) -> Any:
        raise ValueError("not a file under panel/template")


def accessible_template_text() -> str:
    """Panel's fast_list_template.html with TEMPLATE_FIXES applied; ValueError when one no longer matches."""
    text = FastListTemplate._template.read_text(encoding="utf-8")
    for old, new in TEMPLATE_FIXES.items():
        if old not in text:
            raise ValueError(f"Panel's FastListTemplate markup changed: {old!r} not found")
        text = text.replace(old, new)
    return text + LATER_POSTAMBLE


class AccessibleFastListTemplate(FastListTemplate):
    """FastListTemplate with a main landmark, a named filters region and no empty list.

    Relies on ``BasicTemplate._template`` (the Jinja file a template class renders) and
    its markup; Panel has no public way to add landmarks. Checked by tests/test_panel_compat.py.
    """

    _template = _TemplateText(accessible_template_text())

    def set_lead(self, text: str) -> None:
        """A line of text at the top of the main area, in the page's HTML itself (escaped by the template).

        Relies on ``BaseTemplate._render_variables`` (the Jinja variables a template renders
        with): the public ``add_variable`` exists only on ``pn.template.Template``, not on the
        BasicTemplate family (FastListTemplate) whose markup we extend.
        """
        self._render_variables["opsdash_lead"] = text


#: Two repairs of markup made in the browser, applied to every view as it appears.
#: (1) Tabulator (6.4) makes its whole box ``role="grid"``, pagination buttons and the focusable
#: scroll box included (axe-core "aria-required-children", critical: a grid may own rows only).
#: Its box becomes a named region holding two grids, the header row and the rows (each owns
#: rows only); every ticket cell stays a gridcell under its grid. Tabulator has no option for
#: roles, and a Panel view may be rebuilt (new page of rows): re-applied twice a second, idempotent,
#: browser-side only (no message to the server).
#: (2) Panel's FileDownload listens for clicks on the link inside its button, so Enter or Space on
#: the focused button (and a click on its padding) did nothing: the button hands them to the link.
PAGE_A11Y_JS = """
function opsdashTabulatorRoles(root) {
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) opsdashTabulatorRoles(el.shadowRoot);
  }
  for (const table of root.querySelectorAll('.tabulator[role=grid]')) {
    table.setAttribute('role', 'region');
    table.setAttribute('aria-label', 'Tickets table');
    table.removeAttribute('aria-owns');
    const header = table.querySelector(':scope > .tabulator-header');
    if (header) { header.setAttribute('role', 'grid'); header.setAttribute('aria-label', 'Column headings'); }
    const body = table.querySelector(':scope > .tabulator-tableholder');
    if (body) { body.setAttribute('role', 'grid'); body.setAttribute('aria-label', 'Tickets'); }
  }
}
function opsdashDownloadKeys(root) {
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) opsdashDownloadKeys(el.shadowRoot);
  }
  for (const button of root.querySelectorAll('button.bk-btn:not([data-opsdash-keys])')) {
    const link = button.querySelector(':scope > a');
    if (!link) continue;
    button.setAttribute('data-opsdash-keys', '');
    button.addEventListener('click', event => { if (event.target === button) link.click(); });
  }
}
function opsdashA11y() { opsdashTabulatorRoles(document); opsdashDownloadKeys(document); }
opsdashA11y();
if (!window.opsdashA11yTimer) window.opsdashA11yTimer = setInterval(opsdashA11y, 500);
"""


# ---- 4b. a page rehearsed at server start ----------------------------------------------------------

def rehearse_page_parts(parts: list[pn.viewable.Viewable]) -> None:
    """Build the models of each of ``parts`` once, into a document nobody sees, and forget them.

    For a server's start (``dashboard_app.pages.rehearse_first_page``). Private:
    ``state._views``, where ``get_root`` registers every root it builds (Panel removes
    them only when a served session ends). Public alternative missing: a way to build
    a view's models without registering them.
    """
    doc = Document()
    for part in parts:
        root = part.get_root(doc)
        state._views.pop(root.ref["id"], None)


# ---- 5. sign-in ----------------------------------------------------------------------------------

def validate_next_url(next_url: str | None) -> str | None:
    """The sign-in's ``?next=`` target, checked as Panel's own sign-in checks it (HTTPError 400 when off-site).

    Private: ``panel.auth._validate_next_url``. Public alternative missing: Panel's login
    handlers use it inline; nothing public validates a redirect target.
    """
    # import cycle: panel.auth loads dashboard_app.auth (its `panel.auth` entry point) while it is
    # imported, and that imports this module. At the top here, importing any component would load
    # the app through that entry point, and a circle would fail whichever module came first.
    from panel import auth

    return auth._validate_next_url(next_url)


def login_endpoint(handler: RequestHandler) -> str:
    """The sign-in path (``panel serve --login-endpoint``, default ``/login``) Panel gave our login handler.

    Private: the ``_login_endpoint`` class attribute Panel's OAuthProvider sets on the
    handler class. Public alternative missing: the path is kept nowhere else.
    """
    return handler._login_endpoint


def encode_id_token(claims: dict[str, Any]) -> str | bytes:
    """The ``id_token`` cookie value Panel's basic sign-in writes for ``claims`` (before Tornado signs it).

    Panel's cookie format (base64url JSON, encrypted with ``state.encryption`` when Panel
    encrypts cookies): public names, undocumented format. ``pn.state.user_info`` reads it
    back in a session; our streaming export route has no session, so ``decode_id_token``.
    """
    token = base64url_encode(json.dumps(claims))
    return state.encryption.encrypt(token.encode("utf-8")) if state.encryption else token


def decode_id_token(raw: bytes) -> dict[str, Any] | None:
    """Claims of a verified ``id_token`` cookie value (ours or an OAuth provider's JWT); None when unreadable."""
    try:
        if state.encryption is not None:
            raw = state.encryption.decrypt(raw)
        info = decode_token(raw.decode("utf-8"))
    except Exception:  # unreadable: the external provider's mapping then refuses
        return None
    return info if isinstance(info, dict) else None


# ---- 6. the server ----------------------------------------------------------------------------------
# Monkeypatches of Panel's, Bokeh's and Tornado's server classes: none has a setting or a hook
# for these. Each wraps the original and is applied once (dashboard_app/panel_fence.install).

def forget_bokeh_secret_key() -> None:
    """Make Bokeh read ``BOKEH_SECRET_KEY`` again (``import panel`` already asked, and Bokeh caches the first answer).

    Private: the ``_secret_key_bytes`` cache of ``bokeh.settings.settings.secret_key_bytes()``.
    Public alternative missing: Bokeh offers no way to reset it.
    """
    bokeh_settings.__dict__.pop("_secret_key_bytes", None)


def restrict_component_resources(allowed: Callable[[str], bool]) -> None:
    """``/components/<module>/...`` serves only modules ``allowed(module)``; every failure is a 404, never a 500.

    Replaces ``panel.io.server.ComponentResourceHandler.parse_url_path``, which imports the
    module named in the URL. Public alternative missing: the route cannot be turned off.
    """
    original = ComponentResourceHandler.parse_url_path

    def parse_url_path(self, path: str) -> str:
        if not isinstance(path, str) or not allowed(path.split("/", 1)[0]):
            raise HTTPError(404)
        try:
            return original(self, path)
        except HTTPError:
            raise
        except Exception:  # a malformed path (e.g. missing parts): not found, never a 500
            raise HTTPError(404) from None

    ComponentResourceHandler.parse_url_path = parse_url_path


def refuse_nul_in_static_paths() -> None:
    """A NUL in a static path (``/static/%00``) is a 400 (it raised ValueError deep in ``os``: a 500).

    Every static route (Bokeh's, Panel's, the component route) is a Tornado
    ``StaticFileHandler``; its ``parse_url_path`` is an override point Tornado documents,
    but only for subclasses, and Bokeh and Panel make their own.
    """
    original = StaticFileHandler.parse_url_path

    def parse_url_path(self, url_path: str) -> str:
        if "\x00" in url_path:
            raise HTTPError(400)
        return original(self, url_path)

    StaticFileHandler.parse_url_path = parse_url_path


def add_page_token_claims(claims: Callable[[Any], dict[str, Any]]) -> None:
    """Every page's session token carries ``claims(request)`` over what Bokeh put there (its cookies, its headers).

    ``Application.process_request`` is Bokeh's public hook, but Panel's ``panel serve`` makes
    its own Application instances: the class method is replaced, and (Bokeh 3.10 / Panel
    1.10) its async twin ``process_request_async``, which calls Bokeh's unpatched one.
    """
    original = Application.process_request

    def process_request(self, request) -> dict[str, Any]:
        data = original(self, request)
        data.update(claims(request))
        return data

    Application.process_request = process_request
    original_async = getattr(Application, "process_request_async", None)
    if original_async is not None:
        async def process_request_async(self, request) -> dict[str, Any]:
            data = await original_async(self, request)
            data.update(claims(request))
            return data

        Application.process_request_async = process_request_async


def confirm_authenticated_users(confirm: Callable[[RequestHandler, str], Awaitable[str | None]]) -> None:
    """Each request Panel's auth provider accepts (page, websocket) must also pass ``confirm(handler, user)``.

    Replaces the ``panel.auth.OAuthProvider.get_user_async`` property (it accepts any
    validly signed ``user`` cookie). Public alternative missing: no per-request check.
    """
    # import cycle: see validate_next_url (panel.auth imports dashboard_app.auth, which imports this module).
    from panel.auth import OAuthProvider

    original = OAuthProvider.get_user_async

    def get_user_async(self):
        inner = original.fget(self)
        if inner is None:
            return None

        async def get_user(handler):
            user = await inner(handler)
            return None if user is None else await confirm(handler, user)

        return get_user

    OAuthProvider.get_user_async = property(get_user_async)


def add_response_transform(transform: type, on_start: Callable[[list[str]], None] | None = None) -> None:
    """Every response of Bokeh's Tornado application goes through ``transform``; ``on_start(route patterns)`` once built.

    Tornado's ``OutputTransform`` is public, but Bokeh builds its Application itself:
    ``BokehTornado.__init__`` is wrapped to append to ``transforms`` and read
    ``wildcard_router.rules``. Public alternative missing: no Bokeh/Panel option adds one.
    """
    if transform in _added_transforms:  # once per process, however often the server starts
        return
    _added_transforms.add(transform)
    original = BokehTornado.__init__

    def __init__(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        self.transforms.append(transform)
        if on_start is not None:
            on_start([rule.matcher.regex.pattern for rule in self.wildcard_router.rules])

    BokehTornado.__init__ = __init__


_added_transforms: set[type] = set()


def close_session_connections(doc: Document, code: int, reason: str) -> int:
    """Close every websocket of the session ``doc`` belongs to; how many were closed.

    Private: ``ServerSession._subscribed_connections`` and ``ServerConnection._socket``.
    Public alternative missing: Bokeh closes a session's websockets only when it
    expires the session (after the browser's tab is gone).
    """
    context = doc.session_context
    session = getattr(context, "session", None) if context is not None else None
    closed = 0
    for connection in list(getattr(session, "_subscribed_connections", ())):
        socket = getattr(connection, "_socket", None)
        if socket is not None:
            socket.close(code=code, reason=reason)
            closed += 1
    return closed


def current_document() -> Document | None:
    """The Bokeh document of the session the calling code runs for (None outside one).

    For log lines (``dashboard_app/log_format.py``), which may be written from
    any thread. Panel keeps the current document in a ContextVar
    (``state._curdoc``; the worker lanes copy it with the context). The public
    ``pn.state.curdoc`` falls back to Bokeh's ``curdoc()``, which outside a
    session makes a document of its own: a log line must never do that.
    """
    try:
        return state._curdoc.get()
    except Exception:  # moved or renamed: lines lose their session field, nothing else
        return None
