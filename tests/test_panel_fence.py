"""The security hooks ``dashboard_app.panel_fence`` installs (through ``components.panel_compat``) hold.

These fail on an upgrade that moves or renames what a hook relies on, before a served
test shows the hole open again (``tests/test_panel_compat.py`` checks every private name).
"""
from __future__ import annotations

import sys

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
import tornado.web

from components import panel_compat
from dashboard_app import panel_fence


def test_every_way_panel_builds_a_page_token_goes_through_the_fence():
    """Panel 1.10 / Bokeh 3.10 added process_request_async: a hook on the sync one alone left
    the cookies in the page's token there. Any process_request* an upgrade adds must be wrapped."""
    from panel.io.application import Application

    panel_fence.install()
    builders = [name for name in dir(Application) if name.startswith("process_request")]
    assert "process_request" in builders
    for name in builders:
        assert getattr(Application, name).__module__ == panel_compat.__name__, f"{name} is not fenced"


def test_component_route_looks_up_only_panel_modules_already_imported_and_imports_nothing():
    from panel.io.server import ComponentResourceHandler

    panel_fence.install()
    sys.modules.pop("this", None)
    handler = ComponentResourceHandler.__new__(ComponentResourceHandler)
    for path in ("this/x/_css/a", "venv.__main__/x/_css/a", "panel.__main__/x/_css/a", "os/path/_css/a",
                 "panel.template/FastListTemplate/_resources", "", "a"):
        with pytest.raises(tornado.web.HTTPError) as refused:
            handler.parse_url_path(path)
        assert refused.value.status_code in (400, 403, 404), path
    assert "this" not in sys.modules
    assert panel_fence.component_module_allowed("panel.template.fast.list")
    assert not panel_fence.component_module_allowed("panel.does_not_exist")


def test_bokeh_is_told_to_sign_session_tokens():
    from bokeh.settings import settings

    panel_fence.sign_bokeh_sessions()
    assert settings.sign_sessions() and len(settings.secret_key_bytes() or b"") >= 32
