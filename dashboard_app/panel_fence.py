"""The one module that changes Panel's and Bokeh's server from the inside (private API, fenced).

Panel has no setting for any of these, and each closes a hole an outside
attacker used (issue 15). ``tests/test_panel_fence.py`` fails when an
upgrade moves what a hook relies on; ``install()`` refuses to start the
server rather than serve without one.

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
from typing import Any

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
    from bokeh.settings import settings

    settings.__dict__.pop("_secret_key_bytes", None)


def install() -> None:
    """Apply hooks 1-4 (idempotent). Called at server start (``server.start``, when Panel loads ``routes.py``)."""
    global _installed
    if _installed:
        return
    _restrict_component_resources()
    _static_paths_without_nul()
    _token_payload_without_cookies()
    _confirm_every_authenticated_request()
    _harden_every_response()
    _installed = True


# ---- 1. /components/: nothing imported from a URL ----------------------------------------------

def component_module_allowed(name: str) -> bool:
    """Only Panel's own modules, and only those this process has already imported."""
    return (name == "panel" or name.startswith("panel.")) and name in sys.modules and "__main__" not in name


def _restrict_component_resources() -> None:
    from panel.io.server import ComponentResourceHandler
    from tornado.web import HTTPError

    original = ComponentResourceHandler.parse_url_path

    def parse_url_path(self, path: str) -> str:
        if not isinstance(path, str) or not component_module_allowed(path.split("/", 1)[0]):
            raise HTTPError(404)
        try:
            return original(self, path)
        except HTTPError:
            raise
        except Exception:  # a malformed path (e.g. missing parts): not found, never a 500
            raise HTTPError(404) from None

    ComponentResourceHandler.parse_url_path = parse_url_path


def _static_paths_without_nul() -> None:
    """A NUL in a static path (``/static/%00``) raised ValueError deep in ``os``: a 500 and a traceback.

    Every static route (Bokeh's, Panel's, the component route) is a Tornado StaticFileHandler.
    """
    from tornado.web import HTTPError, StaticFileHandler

    original = StaticFileHandler.parse_url_path

    def parse_url_path(self, url_path: str) -> str:
        if "\x00" in url_path:
            raise HTTPError(400)
        return original(self, url_path)

    StaticFileHandler.parse_url_path = parse_url_path


# ---- 2. the page's token carries no cookie -------------------------------------------------------

def _token_payload_without_cookies() -> None:
    from panel.io.application import Application

    from .web_session import page_claims

    original = Application.process_request

    def process_request(self, request) -> dict[str, Any]:
        data = original(self, request)
        data.update(page_claims(request))
        return data

    Application.process_request = process_request


# ---- 3. every authenticated request checks the session -------------------------------------------

def _confirm_every_authenticated_request() -> None:
    from panel.auth import OAuthProvider

    from .web_session import confirm_user

    original = OAuthProvider.get_user_async

    def get_user_async(self):
        inner = original.fget(self)
        if inner is None:
            return None

        async def get_user(handler):
            user = await inner(handler)
            return None if user is None else await confirm_user(handler, user)

        return get_user

    OAuthProvider.get_user_async = property(get_user_async)


# ---- 4. headers and cookie attributes on every response ------------------------------------------

def _harden_every_response() -> None:
    from bokeh.server.tornado import BokehTornado

    from .web_headers import SecurityHeaders

    original = BokehTornado.__init__

    def __init__(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        self.transforms.append(SecurityHeaders)
        routes = [rule.matcher.regex.pattern for rule in self.wildcard_router.rules]
        log.info("serving routes: %s", " ".join(routes))

    BokehTornado.__init__ = __init__


# ---- 5. close a revoked session's websockets -----------------------------------------------------

def end_session_connections(doc) -> int:
    """Close every websocket of the session ``doc`` belongs to; how many were closed."""
    context = doc.session_context
    session = getattr(context, "session", None) if context is not None else None
    closed = 0
    for connection in list(getattr(session, "_subscribed_connections", ())):
        socket = getattr(connection, "_socket", None)
        if socket is not None:
            socket.close(code=4001, reason="signed out")  # 4001: ours, "the sign-in ended"
            closed += 1
    return closed
