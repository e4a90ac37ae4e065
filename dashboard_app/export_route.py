"""``/export/download``: the streaming HTTP route for large exports.

Two checks, both on the server: the signed ``user`` cookie Panel's sign-in
sets (tornado ``get_secure_cookie`` with the cookie secret), and a
short-lived signed token that names the same user, the format and the
filters (``data.export_token``). The Scope is built from that user's
database record, never from the request. The export runs in a worker
thread into a temporary file (memory stays flat), then streams out in
blocks; the file is deleted afterwards. Audited with channel ``http``.
"""
from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from urllib.parse import quote

import tornado.iostream
import tornado.web

from data.errors import NotAuthorized, OpsDashError
from data.export import MEDIA_TYPES, export_tickets
from data.export_token import sign_export_token, verify_export_token
from data.filters import TicketFilters
from data.scope import scope_for_user

log = logging.getLogger("opsdash.export")

EXPORT_PATH = "/export/download"
BLOCK_SIZE = 256 * 1024


def export_link(secret: str, username: str, fmt: str, filters: TicketFilters) -> str:
    """The URL a signed-in ``username`` fetches for a streamed export (valid for a few minutes)."""
    return f"{EXPORT_PATH}?token={quote(sign_export_token(secret, username, fmt, filters))}"


class ExportDownloadHandler(tornado.web.RequestHandler):
    def _refuse(self, code: int, message: str) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(message + "\n")

    async def get(self) -> None:
        from panel.config import config

        from .settings import get_engine, get_settings

        secret = get_settings().cookie_secret
        cookie = self.get_secure_cookie("user", max_age_days=config.oauth_expiry) if secret else None
        if not cookie:
            self._refuse(401, "Sign in first: exports need a signed-in user.")
            return
        username = cookie.decode("utf-8", "replace")
        try:
            fmt, filters = verify_export_token(secret, self.get_argument("token", ""), username)
            engine = get_engine()
            scope = await asyncio.to_thread(scope_for_user, engine, username)
        except NotAuthorized as exc:
            log.info("export refused for %r: %s", username[:150], exc)
            self._refuse(403, str(exc))
            return
        with tempfile.TemporaryDirectory(prefix="opsdash-export-") as folder:
            target = Path(folder) / f"export.{fmt}"
            try:
                result = await asyncio.to_thread(export_tickets, engine, scope, filters, fmt, target, channel="http")
            except OpsDashError as exc:
                self._refuse(400, str(exc))
                return
            except Exception:
                log.exception("streamed export failed")
                self._refuse(503, "The export failed: the ticket database could not be reached. Try again shortly.")
                return
            self.set_header("Content-Type", MEDIA_TYPES[fmt])
            self.set_header("Content-Disposition", f'attachment; filename="{result.filename}"')
            self.set_header("Content-Length", str(target.stat().st_size))
            self.set_header("Cache-Control", "no-store")
            self.set_header("X-Content-Type-Options", "nosniff")
            try:
                with open(target, "rb") as handle:
                    while block := handle.read(BLOCK_SIZE):
                        self.write(block)
                        await self.flush()  # one block in memory at a time; waits for a slow client
                self.finish()
            except tornado.iostream.StreamClosedError:  # the browser went away; the export is audited anyway
                log.info("export download by %r closed by the client", username[:150])


def export_buttons(store):
    """The session's ExportButtons, wired to this server's settings and streaming route."""
    from components.export import ExportButtons

    from .settings import get_settings

    settings = get_settings()
    secret, username = settings.cookie_secret, store.scope.username
    link = None
    if secret and username:  # no cookie secret (a notebook): FileDownload only
        def link(fmt: str, filters: TicketFilters) -> str:
            return export_link(secret, username, fmt, filters)
    return ExportButtons(store=store, large_export_rows=settings.large_export_rows, download_link=link)
