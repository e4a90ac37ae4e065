"""What OpsDash changes in Panel's and Bokeh's server, and why (issue 15); applied by ``install()`` at start.

Panel has no setting for any of these, and each closes a hole an outside
attacker used. The hooks themselves (the private API they touch) live in
``components/panel_compat.py``, checked by ``tests/test_panel_compat.py``;
this module only says what they enforce, through public functions.

1. ``/components/<module>/...`` (Panel's ``ComponentResourceHandler``)
   imported the module named in the URL before any check: a URL could end
   the process (``venv.__main__``) or run import-time code (``this``). Only
   modules already imported and part of Panel are looked up now; nothing is
   imported, and every failure is a 404, never a 500. Static paths with a
   NUL byte are a 400 (Tornado's StaticFileHandler gave a 500).
2. Bokeh copies the page request's cookies into the session token embedded
   in the page, where any script can read them (the HttpOnly ``user`` cookie
   among them). ``Application.process_request`` (Bokeh's hook for what a
   token carries) now replaces them with claims that open nothing
   (``web_session.page_claims``).
3. Panel's auth provider accepts any validly signed ``user`` cookie, for 31
   days in a session. Each authenticated request (page, websocket) now also
   passes ``web_session.confirm_user``: a live session record, and for a
   websocket a token this server signed for the same user and session.
4. Security headers and cookie attributes on every response, through a
   Tornado output transform added to Bokeh's Tornado application; it also
   logs the route table at start (what the server exposes, for operators
   and the hostile-route sweep).
5. ``end_session_connections``: a revoked session's open websockets are closed.
"""
from __future__ import annotations

import logging
import os
import secrets
import sys

from bokeh.document import Document

from components import panel_compat

from .web_headers import SecurityHeaders
from .web_session import confirm_user, page_claims

log = logging.getLogger("opsdash.fence")
_installed = False


def sign_bokeh_sessions() -> None:
    """Make Bokeh sign its session ids and tokens (its documented BOKEH_SIGN_SESSIONS/BOKEH_SECRET_KEY).

    ``bokeh serve`` (and so ``panel serve``) reads both when it parses its command line,
    before any plugin is loaded, so this runs where Panel imports our auth provider (and
    in ``opsdash serve``). A random key per process is enough: a token is made and
    checked by the same process (sticky sessions). Set either variable to choose your own.
    """
    os.environ.setdefault("BOKEH_SIGN_SESSIONS", "true")
    os.environ.setdefault("BOKEH_SECRET_KEY", secrets.token_urlsafe(48))
    # `import panel` already asked Bokeh for its key (a default argument of BokehTornado), and Bokeh
    # keeps the first answer (None then): forget it, so `bokeh serve` reads the variable now set.
    panel_compat.forget_bokeh_secret_key()


def install() -> None:
    """Apply hooks 1-4 and leave MathJax out of served pages (idempotent). Called at server start (``server.start``)."""
    global _installed
    if _installed:
        return
    panel_compat.restrict_component_resources(component_module_allowed)  # 1
    panel_compat.refuse_nul_in_static_paths()  # 1
    panel_compat.add_page_token_claims(page_claims)  # 2
    panel_compat.confirm_authenticated_users(confirm_user)  # 3
    panel_compat.add_response_transform(SecurityHeaders, log_routes)  # 4
    if not panel_compat.serve_pages_without_mathjax():
        log.warning("this Panel decides about MathJax differently: served pages keep its 1.8 MB bundle")
    _installed = True


def component_module_allowed(name: str) -> bool:
    """1. Only Panel's own modules, and only those this process has already imported."""
    return (name == "panel" or name.startswith("panel.")) and name in sys.modules and "__main__" not in name


def log_routes(patterns: list[str]) -> None:
    """4. What the server exposes, for operators and the hostile-route sweep (tests/test_web_routes.py)."""
    log.info("serving routes: %s", " ".join(patterns))


def end_session_connections(doc: Document) -> int:
    """5. Close every websocket of the session ``doc`` belongs to; how many were closed."""
    return panel_compat.close_session_connections(doc, code=4001, reason="signed out")  # 4001: "the sign-in ended"
