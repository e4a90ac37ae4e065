"""Panel's, Bokeh's and Tornado's internals are used in one module only, and what it relies on is still there.

``components/panel_compat.py`` is the fence (issue 16). The first tests check each
hook against the installed Panel/Bokeh: when one fails after an upgrade, its message
says what moved and where to look. The last ones walk the product code with ``ast``
and fail on a private name of theirs used outside the fence.
"""
from __future__ import annotations

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)

import ast
import asyncio
import importlib
import contextvars
import inspect
import threading
import io
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import panel as pn
import pytest
import tornado.web
from bokeh.document import Document
from bokeh.resources import Resources
from bokeh.server.connection import ServerConnection
from bokeh.server.contexts import BokehSessionContext
from bokeh.server.session import ServerSession
from bokeh.server.tornado import BokehTornado
from bokeh.server.views.auth_request_handler import AuthRequestHandler
from bokeh.settings import Settings
from panel.auth import BasicLoginHandler, OAuthProvider
from panel.io import PeriodicCallback
from panel.io import resources as panel_resources
from panel.io.application import Application
from panel.io.server import ComponentResourceHandler
from panel.io.state import state

from components import panel_compat
from components.panel_compat import OptionalFileDownload, PagedTabulator

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("data", "components", "dashboard_app")
FENCE = ROOT / "components" / "panel_compat.py"
FOREIGN = ("panel", "bokeh", "tornado")
#: Underscore names Panel documents as the API of a custom component (not private).
DOCUMENTED = {"_esm": "JSComponent's ES module source (Panel docs, 'Building custom components')"}

UPGRADE = "Panel/Bokeh upgrade: {what} changed; read the new source and adapt components/panel_compat.py ({hook})."


def params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


# ---- (a) every hook still finds what it relies on ---------------------------------------------

def test_tabulator_still_has_the_paging_internals_paged_tabulator_overrides():
    tabulator = pn.widgets.Tabulator
    hook = "PagedTabulator"
    assert isinstance(tabulator._rename, Mapping), UPGRADE.format(what="Tabulator._rename", hook=hook)
    assert isinstance(inspect.getattr_static(tabulator, "_length"), property), \
        UPGRADE.format(what="Tabulator._length (a property, the rows the page count comes from)", hook=hook)
    assert params(tabulator._get_data) == ["self"], UPGRADE.format(what="Tabulator._get_data()", hook=hook)
    assert params(tabulator._process_df_and_convert_to_cds) == ["self", "df"], \
        UPGRADE.format(what="Tabulator._process_df_and_convert_to_cds(df)", hook=hook)
    assert params(tabulator._sort_df) == ["self", "df"], UPGRADE.format(what="Tabulator._sort_df(df)", hook=hook)
    assert "self._length" in inspect.getsource(tabulator._update_max_page), \
        UPGRADE.format(what="how Tabulator counts pages (_update_max_page no longer reads _length)", hook=hook)
    assert params(tabulator._update_max_page) == ["self"], UPGRADE.format(what="Tabulator._update_max_page()",
                                                                          hook=hook)


def test_paged_tabulator_shows_the_page_it_is_given_and_counts_pages_from_total_rows():
    page = pd.DataFrame({"n": [9, 3, 7]})  # one page, in the database's order
    table = PagedTabulator(value=page, pagination="remote", page_size=3, total_rows=1000,
                           sorters=[{"field": "n", "dir": "asc"}])
    model = table.get_root()
    assert model.max_page == 334, "the browser's pager must count total_rows, not the rows held"
    assert list(model.source.data["n"]) == [9, 3, 7], "the page must be sent as given: unsorted, unsliced"
    table.total_rows = 2000
    table.value = pd.DataFrame({"n": [1, 2, 3]})
    assert model.max_page == 667 and list(model.source.data["n"]) == [1, 2, 3]
    table.total_rows = 4  # the total alone, after its rows (counted apart from them)
    assert model.max_page == 2 and table.param.page.bounds == (1, 2)
    assert "total_rows" not in model.properties(), "total_rows must stay on the server"


def test_file_download_still_hands_the_callbacks_result_to_sync_data():
    hook = "OptionalFileDownload"
    download = pn.widgets.FileDownload
    assert params(download._sync_data) == ["self", "fileobj"], UPGRADE.format(what="FileDownload._sync_data(fileobj)",
                                                                              hook=hook)
    assert inspect.getsource(download).count("self._sync_data(fileobj)") >= 2, \
        UPGRADE.format(what="FileDownload's click handling (sync and async callbacks) no longer calls _sync_data",
                       hook=hook)


def test_optional_file_download_sends_nothing_for_none_and_the_file_otherwise():
    async def nothing() -> None:
        return None

    async def a_file() -> io.BytesIO:
        return io.BytesIO(b"a,b\n")

    async def click(callback) -> OptionalFileDownload:
        widget = OptionalFileDownload(callback=callback, filename="tickets.csv")
        widget._clicks += 1  # the browser's click
        for _ in range(50):
            await asyncio.sleep(0.02)
            if widget.data:
                break
        return widget

    refused = asyncio.run(click(nothing))
    sent = asyncio.run(click(a_file))
    assert refused.data is None
    assert sent.data.startswith("data:text/plain") and sent.data.endswith("YSxiCg==")  # base64 of "a,b\n"


def test_a_background_periodic_callback_never_marks_the_server_busy():
    """Public API (``PeriodicCallback(background=True)``, dashboard_app/live.py), but undocumented: checked here."""
    async def busy_during_a_run(background: bool) -> list[bool]:
        seen: list[bool] = []
        callback = PeriodicCallback(callback=lambda: seen.append(state.busy), period=10, count=1,
                                    background=background, log=False)
        callback.start()
        for _ in range(50):
            await asyncio.sleep(0.02)
            if seen:
                break
        callback.stop()
        return seen

    assert asyncio.run(busy_during_a_run(False)) == [True], "the check itself: a foreground callback marks busy"
    assert asyncio.run(busy_during_a_run(True)) == [False], \
        "PeriodicCallback(background=True) marks the server busy again: dashboard_app/live.py must change"


def test_panel_still_registers_every_root_get_root_builds_where_the_rehearsal_forgets_it():
    """``rehearse_page_parts`` pops the roots it builds from ``state._views``: Panel must keep them there."""
    pane = pn.pane.Markdown("### rehearsed")
    root = pane.get_root(Document())
    assert state._views.pop(root.ref["id"])[0] is pane


def test_the_servers_rehearsal_of_a_page_leaves_no_view_behind():
    from dashboard_app.pages import rehearse_first_page

    before = set(state._views)
    rehearse_first_page()
    rehearse_first_page()
    assert set(state._views) == before


def test_panel_still_decides_about_mathjax_in_the_helper_the_fence_replaces():
    hook = "serve_pages_without_mathjax"
    assert params(panel_resources._panel_use_mathjax) == ["roots"], \
        UPGRADE.format(what="panel.io.resources._panel_use_mathjax(roots)", hook=hook)
    assert "_panel_use_mathjax(roots)" in inspect.getsource(panel_resources.bundle_resources), \
        UPGRADE.format(what="bundle_resources no longer asks _panel_use_mathjax", hook=hook)
    root = pn.pane.Markdown("text").get_root()
    assert panel_compat.serve_pages_without_mathjax()
    bundle = panel_resources.bundle_resources([root], Resources(mode="cdn"))
    assert not [url for url in bundle.js_files if "mathjax" in str(url).lower()]


def test_bokeh_still_lists_its_default_bundles_where_the_webgl_hook_drops_one(monkeypatch):
    hook = "serve_pages_without_webgl"
    defaults = Resources._default_components
    assert isinstance(defaults, list) and {"bokeh", "bokeh-gl"} <= set(defaults) | {"bokeh-gl"}, \
        UPGRADE.format(what="bokeh.resources.Resources._default_components (a list of bundle names)", hook=hook)
    monkeypatch.setattr(Resources, "_default_components", list(defaults))  # restored after the test
    assert panel_compat.serve_pages_without_webgl()
    files = Resources(mode="server", root_url="/").js_files
    assert files and not [url for url in files if "bokeh-gl" in url]
    assert [url for url in files if "bokeh.min.js" in url or "bokeh.js" in url]


def test_the_fast_design_still_names_its_google_font_where_the_font_hook_drops_it(monkeypatch):
    from panel.theme.fast import Fast

    hook = "serve_pages_without_google_fonts"
    resources = Fast._resources
    assert isinstance(resources, dict), UPGRADE.format(what="panel.theme.fast.Fast._resources (a dict)", hook=hook)
    monkeypatch.setattr(Fast, "_resources", dict(resources))  # restored after the test
    assert panel_compat.serve_pages_without_google_fonts()
    assert "font" not in Fast._resources
    assert "googleapis" not in repr(Fast._resources)


def test_the_fast_list_template_still_has_the_markup_the_accessible_template_fixes(tmp_path):
    hook = "AccessibleFastListTemplate"
    original = pn.template.FastListTemplate._template
    assert isinstance(original, Path), UPGRADE.format(what="FastListTemplate._template (a Path)", hook=hook)
    text = original.read_text(encoding="utf-8")
    for old in panel_compat.TEMPLATE_FIXES:
        assert old in text, UPGRADE.format(what=f"fast_list_template.html ({old})", hook=hook)
    page = panel_compat.AccessibleFastListTemplate(title="OpsDash", main=[pn.pane.Markdown("figures")],
                                                   sidebar=[pn.pane.Markdown("filters")])
    served = page._template.read_text()  # what Panel builds the page from
    assert all(new in served for new in panel_compat.TEMPLATE_FIXES.values())
    assert '{% extends "base/base.html" %}' in served  # still Panel's page around it
    # set_lead: a variable the page renders with, escaped (a municipality's name is not markup).
    assert isinstance(getattr(page, "_render_variables", None), dict), UPGRADE.format(
        what="BaseTemplate._render_variables (the template's Jinja variables)", hook=f"{hook}.set_lead")
    page.set_lead("Ward <b>7</b> & co")
    saved = tmp_path / "page.html"
    page.save(str(saved))
    assert '<p class="opsdash-who opsdash-lead">Ward &lt;b&gt;7&lt;/b&gt; &amp; co</p>' in saved.read_text()


def test_panels_page_templates_hold_only_what_the_after_paint_loader_carries():
    """``serve_pages_scripts_after_first_paint`` replaces Panel's script and stylesheet templates and its onload wrapper:
    each of Panel's must still consist of script files, modules, module exports and snippets (scripts), links and
    styles (stylesheets), and the wrapper wait for DOMContentLoaded, or a page would lose what ours does not carry."""
    import bokeh.embed.wrappers
    import jinja2

    hook = "serve_pages_scripts_after_first_paint"
    for name in ("JS_RESOURCES", "BkCSS_RESOURCES"):
        assert isinstance(getattr(panel_resources, name, None), jinja2.Template), UPGRADE.format(
            what=f"panel.io.resources.{name} (a jinja2 Template)", hook=hook)
    scripts = dict(js_files=["a.js", "b.js"], js_modules=["m.js"], js_module_exports={"X": "x.js"},
                   js_raw=["Bokeh.set_log_level('info');"], hashes={})
    panels = panel_resources.JS_RESOURCES.render(**scripts)
    if panels == panel_compat.LATER_JS_RESOURCES.render(**scripts):  # served pages' hooks are already on
        panels = jinja2.Template((Path(pn.__file__).parent / "_templates" / "js_resources.html").read_text()).render(**scripts)
    ours = panel_compat.LATER_JS_RESOURCES.render(**scripts)
    known = [r'<script type="esms-options">\{"shimMode": true\}</script>',
             r'<script type="text/javascript" src="a\.js"></script>', r'<script type="text/javascript" src="b\.js"></script>',
             r'<script type="module" src="m\.js"></script>',
             r'<script type="module">\s*import X from "\./x\.js";\s*window\.X = X\s*</script>',
             r"<script type=\"text/javascript\">\s*Bokeh\.set_log_level\('info'\);\s*</script>"]
    rest = panels
    for pattern in known:
        rest, found = re.subn(pattern, "", rest)
        assert found == 1, UPGRADE.format(what=f"Panel's js_resources.html ({pattern})", hook=hook)
    assert not re.sub(r"\{#.*?#\}", "", rest, flags=re.S).strip(), UPGRADE.format(what=f"js_resources.html: {rest!r}", hook=hook)
    assert 'const files = ["a.js", "b.js"];' in ours and 'opsdashLater.modules.push(...["m.js"]);' in ours
    assert re.search(r"window\.opsdashScriptsReady\.then\(\(\) => \{\s*Bokeh\.set_log_level\('info'\);\s*\}\);", ours)
    assert re.search(known[4], ours) and "<script src" not in ours and " src=" not in ours

    styles = dict(css_files=["s.css"], css_raw=[".x { color: red }"])
    theirs = bokeh.embed.bundle.CSS_RESOURCES.render(**styles)
    rest = re.sub(r'<link rel="stylesheet" href="s\.css" type="text/css" />|<style>\s*\.x \{ color: red \}\s*</style>', "", theirs)
    assert not re.sub(r"\{#.*?#\}", "", rest, flags=re.S).strip(), UPGRADE.format(what=f"css_resources.html: {rest!r}", hook=hook)
    ours = panel_compat.LATER_CSS_RESOURCES.render(**styles)
    assert 'opsdashLater.styles.push(...["s.css"]);' in ours and ".x { color: red }" in ours and "<link" not in ours

    onload = bokeh.embed.wrappers._ONLOAD
    if onload == panel_compat.SCRIPTS_READY_ONLOAD:
        onload = inspect.getsource(panel_resources).split("bokeh.embed.wrappers._ONLOAD = ", 1)[1]
    assert "%(code)s" in onload and 'addEventListener("DOMContentLoaded", fn' in onload, UPGRADE.format(
        what="Panel's bokeh.embed.wrappers._ONLOAD", hook=hook)


def test_the_postamble_the_accessible_template_replaces_is_still_panels():
    """``LATER_POSTAMBLE`` is Panel's ``base/base.html`` postamble with the widgets' stylesheets and the Fast modules
    queued: Panel's must still render exactly the same resources and blocks, in the same order."""
    hook = "AccessibleFastListTemplate (LATER_POSTAMBLE)"
    base = (Path(pn.__file__).parent / "template" / "base" / "base.html").read_text(encoding="utf-8")
    block = re.search(r"\{% block postamble %\}(.*?)\{% block custom_js %\}\s*\{% endblock %\}\s*\{% endblock %\}", base, re.S)
    assert block, UPGRADE.format(what="base/base.html's postamble block", hook=hook)
    uses = re.findall(r"template_resources\['(\w+)'\]|\{% block (\w+) %\}", block.group(1))
    assert [a or b for a, b in uses] == ["css", "custom_css", "raw_css", "js", "js_modules"], UPGRADE.format(
        what=f"base/base.html's postamble ({uses})", hook=hook)
    ours = panel_compat.LATER_POSTAMBLE
    for used in ("template_resources['css']", "self.custom_css()", "template_resources['raw_css']",
                 "template_resources['js']", "template_resources['js_modules']", "self.custom_js()"):
        assert used in ours


def test_tabulator_still_marks_its_box_a_grid_where_the_roles_script_changes_it():
    hook = "PAGE_A11Y_JS"
    bundles = list(Path(pn.__file__).parent.glob("dist/bundled/datatabulator/tabulator-tables@*/dist/js/tabulator.min.js"))
    assert len(bundles) == 1, UPGRADE.format(what="Panel's bundled Tabulator", hook=hook)
    source = bundles[0].read_text(encoding="utf-8")
    for needle in ('t.setAttribute("role","grid")', '"tabulator-tableholder"', 'classList.add("tabulator-header")'):
        assert needle in source, UPGRADE.format(what=f"Tabulator's markup ({needle})", hook=hook)


def test_file_download_still_listens_on_the_link_the_keyboard_repair_forwards_to():
    source = (Path(pn.__file__).parent / "models" / "file_download.ts").read_text(encoding="utf-8")
    assert 'this.anchor_el.addEventListener("click"' in source, UPGRADE.format(
        what="FileDownload's click handling (panel/models/file_download.ts)", hook="PAGE_A11Y_JS")


def test_models_frozen_adds_roots_in_one_walk():
    doc = Document()
    roots = [pn.pane.Markdown(f"{n}").get_root(doc) for n in range(3)]
    walks = []
    original = doc.models.recompute
    doc.models.recompute = lambda: (walks.append(1), original())[1]
    with panel_compat.models_frozen(doc):
        for root in roots:
            doc.add_root(root)
    assert len(walks) == 1, "Document.models.freeze() no longer defers Bokeh's model walk: check bokeh.document.models"
    assert all(doc.get_model_by_id(root.id) is root for root in roots)


def test_next_url_validation_is_still_panels_and_refuses_other_sites():
    hook = "validate_next_url"
    assert params(panel.auth._validate_next_url) == ["next_url"], \
        UPGRADE.format(what="panel.auth._validate_next_url(next_url)", hook=hook)
    assert panel_compat.validate_next_url("/app?ward=1") == "/app?ward=1"
    assert panel_compat.validate_next_url(None) is None
    for hostile in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        with pytest.raises(tornado.web.HTTPError) as refused:
            panel_compat.validate_next_url(hostile)
        assert refused.value.status_code == 400, hostile


def test_panel_still_gives_the_login_handler_its_endpoint_on_the_class():
    assert BasicLoginHandler._login_endpoint == "/login"
    assert "handler._login_endpoint = self._login_endpoint" in inspect.getsource(OAuthProvider.login_handler.fget), \
        UPGRADE.format(what="how Panel tells a login handler its --login-endpoint", hook="login_endpoint")
    assert panel_compat.login_endpoint(BasicLoginHandler.__new__(BasicLoginHandler)) == "/login"


def test_id_token_cookie_keeps_panels_format():
    hook = "encode_id_token/decode_id_token"
    assert "base64url_encode(json.dumps({'user': user}))" in inspect.getsource(BasicLoginHandler.set_current_user), \
        UPGRADE.format(what="the id_token cookie Panel's basic sign-in writes", hook=hook)
    assert "decode_token(id_token)" in inspect.getsource(type(state).user_info.fget), \
        UPGRADE.format(what="how pn.state.user_info reads the id_token cookie", hook=hook)
    token = panel_compat.encode_id_token({"user": "thandi"})
    assert panel_compat.decode_id_token(token.encode("ascii")) == {"user": "thandi"}
    assert panel_compat.decode_id_token(b"not a token") is None


def test_bokeh_still_caches_its_secret_key_where_the_fence_forgets_it(monkeypatch):
    assert "_secret_key_bytes" in inspect.getsource(Settings.secret_key_bytes), \
        UPGRADE.format(what="bokeh.settings secret key cache", hook="forget_bokeh_secret_key")
    settings = importlib.import_module("bokeh.settings").settings
    monkeypatch.setenv("BOKEH_SECRET_KEY", "first-key-" * 4)
    panel_compat.forget_bokeh_secret_key()
    assert settings.secret_key_bytes() == ("first-key-" * 4).encode()
    monkeypatch.setenv("BOKEH_SECRET_KEY", "second-key" * 4)
    panel_compat.forget_bokeh_secret_key()
    assert settings.secret_key_bytes() == ("second-key" * 4).encode()
    monkeypatch.undo()
    panel_compat.forget_bokeh_secret_key()


def test_the_server_classes_the_security_hooks_wrap_keep_their_shape():
    """Issue 15's hooks (dashboard_app/panel_fence.py says what each enforces)."""
    checks = {
        "ComponentResourceHandler.parse_url_path(self, path)":
            params(ComponentResourceHandler.parse_url_path) == ["self", "path"],
        "tornado StaticFileHandler.parse_url_path(self, url_path)":
            params(tornado.web.StaticFileHandler.parse_url_path) == ["self", "url_path"],
        "Application.process_request(self, request)": params(Application.process_request) == ["self", "request"],
        "OAuthProvider.get_user_async (a property)":
            isinstance(inspect.getattr_static(OAuthProvider, "get_user_async"), property),
        "BokehTornado.__init__ (self.transforms, self.wildcard_router.rules)":
            issubclass(BokehTornado, tornado.web.Application)
            and hasattr(tornado.web.Application(), "transforms") and hasattr(tornado.web.Application(), "wildcard_router"),
        "ServerSession._subscribed_connections": "self._subscribed_connections" in inspect.getsource(ServerSession.__init__),
        "ServerConnection._socket": "self._socket = socket" in inspect.getsource(ServerConnection.__init__),
        "BokehSessionContext.token_payload (a property; web_session.session_claims reads it)":
            isinstance(inspect.getattr_static(BokehSessionContext, "token_payload"), property),
        "AuthRequestHandler.prepare (where Bokeh asks get_user_async)":
            "def prepare" in inspect.getsource(AuthRequestHandler),
    }
    moved = [what for what, holds in checks.items() if not holds]
    assert not moved, UPGRADE.format(what=", ".join(moved), hook="the server hooks")


def test_current_document_is_the_session_panel_runs_code_for_and_none_outside_one():
    """dashboard_app/log_format.py: a log line names its session without making a document."""
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    assert panel_compat.current_document() is None
    doc = Document()
    with set_curdoc(doc):
        assert panel_compat.current_document() is doc
        seen = []
        thread = threading.Thread(target=contextvars.copy_context().run, args=(lambda: seen.append(
            panel_compat.current_document()),))
        thread.start()
        thread.join()
        assert seen == [doc], "a worker lane (which copies the context) would log without its session"
    assert panel_compat.current_document() is None

# ---- (b) nothing outside the fence touches their internals --------------------------------------

def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def foreign_private_names() -> frozenset[str]:
    """Every underscore identifier in Panel's, Bokeh's and Tornado's own source."""
    found: set[str] = set()
    for package in FOREIGN:
        folder = Path(importlib.import_module(package).__file__).parent
        for path in folder.rglob("*.py"):
            if "tests" not in path.parts:
                found.update(re.findall(r"\b(_[A-Za-z]\w*)", path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(name for name in found if is_private(name))


def product_files() -> list[Path]:
    return [path for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py"))]


def own_private_names(files: list[Path]) -> frozenset[str]:
    """Underscore names the product itself defines (functions, class and module attributes, ``self._x = ...``)."""
    own: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                own.add(node.attr)
            elif isinstance(node, ast.alias) and node.asname:
                own.add(node.asname)
    return frozenset(name for name in own if is_private(name))


def root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def on_self(node: ast.Attribute) -> bool:
    """``self._x`` / ``cls._x``: the class's own name (checked against its bases separately), not someone else's."""
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


def load_object(path: str):
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for part in parts[end:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def private_uses(source: str, filename: str, foreign: frozenset[str], own: frozenset[str]) -> list[str]:
    """Where ``source`` uses a private name of Panel, Bokeh or Tornado, as ``file:line what``."""
    tree = ast.parse(source, filename=filename)
    imported: dict[str, str] = {}  # local name -> dotted origin, for names bound to panel/bokeh/tornado
    found: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno} {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FOREIGN:
                    local = alias.asname or alias.name.split(".")[0]
                    imported[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in FOREIGN:
            for alias in node.names:
                if is_private(alias.name):
                    flag(node, f"imports {node.module}.{alias.name}")
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def someone_elses(name: str) -> bool:
        return is_private(name) and name in foreign and name not in own

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            root = root_name(node.value)
            if root in imported:
                flag(node, f"{ast.unparse(node)} (private to {imported[root].split('.')[0]})")
            elif not on_self(node) and someone_elses(node.attr):
                flag(node, f"{ast.unparse(node)} ({node.attr}: a private name of Panel/Bokeh/Tornado)")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and is_private(node.args[1].value)
              and (root_name(node.args[0]) in imported or someone_elses(node.args[1].value))):
            flag(node, f"{node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ClassDef):
            bases = [load_object(imported[path.split(".")[0]] + path[len(path.split(".")[0]):])
                     for base in node.bases if (path := dotted(base)) and path.split(".")[0] in imported]
            theirs = [c for b in bases for c in inspect.getmro(b) if c.__module__.split(".")[0] in FOREIGN]
            if theirs:
                known = "\n".join(inspect.getsource(c) for c in theirs if c.__module__ != "builtins")
                for name, where in class_private_names(node):
                    if name not in DOCUMENTED and (any(name in vars(c) for c in theirs)
                                                   or re.search(rf"\bself\.{name}\b", known)):
                        flag(where, f"class {node.name} uses {name} of {theirs[0].__name__}")
    return found


def class_private_names(cls: ast.ClassDef) -> list[tuple[str, ast.AST]]:
    """Underscore names a class defines (methods, class attributes) or reads or writes on ``self``."""
    names: list[tuple[str, ast.AST]] = []
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and is_private(node.name):
            names.append((node.name, node))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name) and is_private(target.id):
                    names.append((target.id, node))
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and on_self(node) and is_private(node.attr):
            names.append((node.attr, node))
    return names


@pytest.fixture(scope="module")
def scan():
    files = product_files()
    # What the fence defines (its overrides of Panel's methods) is Panel's name, not ours.
    foreign, own = foreign_private_names(), own_private_names([path for path in files if path != FENCE])

    def uses(path: Path, source: str | None = None) -> list[str]:
        text = path.read_text(encoding="utf-8") if source is None else source
        return private_uses(text, str(path.relative_to(ROOT)), foreign, own)

    return files, uses


def test_no_private_name_of_panel_bokeh_or_tornado_is_used_outside_the_fence(scan):
    files, uses = scan
    outside = [use for path in files if path != FENCE for use in uses(path)]
    assert not outside, ("private Panel/Bokeh/Tornado names outside components/panel_compat.py (move the use "
                         "there, with the public alternative that is missing and a test here):\n" + "\n".join(outside))


def test_the_walker_finds_the_private_uses_the_fence_replaced(scan):
    """The check itself: each way OpsDash once used Panel's internals outside the fence is found."""
    _, uses = scan
    found = uses(FENCE)
    for name in ("_rename", "_length", "_get_data", "_sort_df", "_sync_data", "_panel_use_mathjax",
                 "_validate_next_url", "_login_endpoint", "_subscribed_connections", "_socket"):
        assert any(name in use for use in found), name
    old = '''
import panel as pn
from panel.io import resources
from panel.auth import _validate_next_url
from panel.auth import BasicLoginHandler

class Table(pn.widgets.Tabulator):
    def _sort_df(self, df):
        return df

class Download(pn.widgets.FileDownload):
    async def _async_sync_data(self):
        pass

class Login(BasicLoginHandler):
    def _validate(self, username, password):
        return self._login_endpoint

class Live:
    def start(self):
        self.callback = pn.state.add_periodic_callback(self.tick)
        self.callback._background = True
        resources._panel_use_mathjax = lambda roots: False
        return pn.state._periodic
'''
    found = "\n".join(uses(ROOT / "components" / "example.py", old))
    for what in ("imports panel.auth._validate_next_url", "class Table uses _sort_df",
                 "class Download uses _async_sync_data", "class Login uses _validate", "class Login uses _login_endpoint",
                 "self.callback._background", "resources._panel_use_mathjax", "pn.state._periodic"):
        assert what in found, what
