"""``/logout``: ends the server-side session record, then Panel's own sign-out."""
from __future__ import annotations

import logging

from panel.auth import LogoutHandler

from data.web_sessions import revoke_session
from data.workers import SHORT

from .log_format import RequestContext
from .settings import get_engine
from .web_session import SESSION_COOKIE, signed_cookie

log = logging.getLogger("opsdash.routes")  # the logger this handler has always written to


class OpsDashLogoutHandler(RequestContext, LogoutHandler):
    """Ends the session record (so a copy of the cookie opens nothing), then Panel's sign-out."""

    async def get(self) -> None:
        session_id = signed_cookie(self.get_secure_cookie, SESSION_COOKIE)
        if session_id:
            try:
                await SHORT.run(revoke_session, get_engine(), session_id)
            except Exception:  # the cookies still go; the record expires on its own
                log.warning("sign-out: could not end the session record (database unavailable)")
        self.clear_cookie(SESSION_COOKIE)
        self.clear_cookie("next_url")
        self.set_header("Cache-Control", "no-store")
        super().get()
