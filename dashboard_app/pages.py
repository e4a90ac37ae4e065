"""The page a session gets: the dashboard, or a clear message instead (never a traceback)."""
from __future__ import annotations

import logging

import jinja2
import panel as pn
from bokeh.resources import Resources as BokehResources
from panel.io import resources
from panel.theme.fast import Fast

from components.store_view import text
from data.errors import NotAuthorized, OpsDashError

from .dashboard import ACCENT, META_VIEWPORT, PAGE_FONT, Dashboard
from .panel_fence import end_session_connections
from .session import current_username
from .web_session import watch_session

log = logging.getLogger("opsdash.pages")


def serve_pages_without_mathjax() -> bool:
    """Leave Bokeh's MathJax bundle out of served pages; False when this Panel cannot.

    Panel adds it (1.8 MB of JavaScript, the page's largest file, 28 % of its
    scripts) to every page holding an HTML or Markdown pane, in case one holds
    LaTeX. Ours never do: fixed headings, and citizen text escaped into HTML
    panes that render no math. Without it a councillor's phone downloads 4.6
    MB instead of 6.4 MB, and every first visit has that much less to parse:
    paired sign-ins, 6 rounds, 1.45 s -> 1.32 s median, faster in all 6
    (docs/performance.md, "Dashboard server and page"). Panel has no setting
    for this, so its helper that decides is replaced; a Panel without it
    keeps MathJax, and the served-page test says so.
    """
    if not callable(getattr(resources, "_panel_use_mathjax", None)):
        log.warning("this Panel decides about MathJax differently: served pages keep its 1.8 MB bundle")
        return False
    resources._panel_use_mathjax = lambda roots: False
    return True


serve_pages_without_mathjax()  # once per process: the server imports this module at start


# ---- PRIVATE HOOKS (issue 17; to move behind the Panel fence at merge) -----------------------
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
    Our templates name system fonts instead (``dashboard.PAGE_FONT``): nothing to
    download, and text shows at once. Panel links it from its design's resource
    list, which has no public setting.
    """
    design_resources = getattr(Fast, "_resources", None)
    if not isinstance(design_resources, dict) or "font" not in design_resources:
        log.warning("this Panel's Fast design lists its fonts differently: check the page for fonts.googleapis.com")
        return False
    Fast._resources = {kind: value for kind, value in design_resources.items() if kind != "font"}
    return True


#: Panel's ``js_resources.html`` with ``defer`` on every script file, its inline snippets run once they
#: have (at DOMContentLoaded, before Bokeh's own embed script, which waits for the same event).
DEFERRED_JS_RESOURCES = jinja2.Template("""<script type="esms-options">{"shimMode": true}</script>
{% for file in js_files %}
<script type="text/javascript" src="{{ file }}" defer></script>
{%- endfor %}
{% for file in js_modules %}
<script type="module" src="{{ file }}"></script>
{%- endfor %}
{%- for name, file in js_module_exports.items() %}
<script type="module">
  import {{ name }} from "{% if not file.startswith('http') %}./{% endif %}{{ file }}";
  window.{{ name }} = {{ name }}
</script>
{%- endfor %}
{%- for js in js_raw %}
<script type="text/javascript">
document.addEventListener("DOMContentLoaded", () => {
  {{ js }}
}, {once: true});
</script>
{%- endfor %}
""")


def serve_pages_with_deferred_scripts() -> bool:
    """Load the page's scripts without holding up its first paint; False when this Panel cannot.

    Panel writes ~850 KB (compressed) of scripts into the page's head as plain
    ``<script src>``: a phone paints nothing until all have arrived and run
    (Lighthouse, mobile: first contentful paint 7.3 s). Deferred, they still
    download at once and run in the same order, before the DOMContentLoaded
    event Bokeh's embed script waits for; the header shows meanwhile
    (docs/performance.md, "Page weight"). Panel has no setting for it.
    Called at server start only: a notebook's output keeps Panel's own.
    """
    if not isinstance(getattr(resources, "JS_RESOURCES", None), jinja2.Template):
        log.warning("this Panel renders its scripts differently: served pages load them without defer")
        return False
    resources.JS_RESOURCES = DEFERRED_JS_RESOURCES
    return True


serve_pages_without_webgl()
serve_pages_without_google_fonts()

NO_ACCESS = "No access"
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
    return pn.template.FastListTemplate(title="OpsDash", main=[body], accent=ACCENT, header_background=ACCENT,
                                        meta_viewport=META_VIEWPORT, theme_toggle=False, font=PAGE_FONT)


def end_when_signed_out() -> None:
    """Once this session's sign-in is revoked or expires, its data leaves the page and its websocket closes."""
    doc = pn.state.curdoc

    def end() -> None:
        log.info("closing a dashboard whose sign-in has ended")
        doc.clear()  # every model leaves the page: nothing of the data stays on screen
        # A moment later, so the emptied page reaches the browser before its websocket closes.
        doc.add_timeout_callback(lambda: end_session_connections(doc), 1500)

    watch_session(end)


def build_page() -> pn.viewable.Viewable:
    """The signed-in user's dashboard template, or a message page."""
    try:
        username = current_username()
        dashboard = Dashboard(username=username)
        dashboard.connect_session()
        page = dashboard.template()
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
    with doc.models.freeze():
        page.servable(title=title)
