"""``/export/download``: the streaming HTTP route for large exports.

Two checks, both on the server: the signed ``user`` cookie Panel's sign-in
sets (tornado ``get_secure_cookie`` with the cookie secret), mapped to a
users-table name exactly as the dashboard maps it
(``session.username_for_sign_in``; under OIDC the provider's verified
e-mail from Panel's signed ``id_token`` cookie), and a short-lived signed
token that names the same user, the format and the filters
(``data.export_token``). The Scope is built from that user's
database record, never from the request. The export runs in a worker
thread into a temporary file (memory stays flat), then streams out in
blocks; the file is deleted afterwards. Audited with channel ``http``.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from urllib.parse import quote

import tornado.iostream
import tornado.web
from panel.config import config

from data.errors import DatabaseBusy, NotAuthorized, OpsDashError
from data.export import MEDIA_TYPES, export_tickets
from data.export_token import sign_export_token, verify_export_token
from data.filters import TicketFilters
from data.scope import scope_for_user
from data.web_sessions import valid_session
from data.workers import EXPORT, SHORT

from .session import username_for_sign_in
from .settings import get_engine, get_read_route, get_settings
from .web_session import OWN_PROVIDERS, SESSION_COOKIE, signed_cookie, signed_user_info

log = logging.getLogger("opsdash.export")

EXPORT_PATH = "/export/download"
BLOCK_SIZE = 256 * 1024


def export_link(secret: str, username: str, fmt: str, filters: TicketFilters, root: str = ".") -> str:
    """The URL a signed-in ``username`` fetches for a streamed export (valid for a few minutes).

    Relative to the app's root (``root``: Panel's ``pn.state.rel_path`` of the session, ``.`` for an
    app at the top level), never absolute: under ``panel serve --prefix /opsdash`` or behind a proxy
    that serves OpsDash at a sub-path, only the browser knows the full path of the page.
    """
    token = quote(sign_export_token(secret, username, fmt, filters))
    return f"{root.rstrip('/') or '.'}{EXPORT_PATH}?token={token}"


class ExportDownloadHandler(tornado.web.RequestHandler):
    def _refuse(self, code: int, message: str) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(message + "\n")

    async def get(self) -> None:
        secret = token_secret()
        signed_in = signed_cookie(self.get_secure_cookie, "user") if secret else None
        if not signed_in:
            self._refuse(401, "Sign in first: exports need a signed-in user.")
            return
        try:
            token = self.get_argument("token", "")
        except tornado.web.HTTPError:  # not text (e.g. %FF%FE): a broken link, not a server fault
            self._refuse(400, "The download link is not valid; start the export again from the dashboard.")
            return
        try:
            engine = get_engine()
            if config.oauth_provider in OWN_PROVIDERS:
                # The sign-in must still stand: a copied cookie of a signed-out session exports nothing.
                session_id = signed_cookie(self.get_secure_cookie, SESSION_COOKIE)
                record = await SHORT.run(valid_session, engine, session_id=session_id)
                if record is None or record.username != signed_in:
                    self._refuse(401, "Sign in first: your sign-in has ended.")
                    return
            # The same mapping the dashboard applies (OIDC: the provider's verified e-mail -> users row),
            # so the token, minted for the mapped username, matches only that user's cookie.
            username = await SHORT.run(username_for_sign_in, engine, signed_in, config.oauth_provider,
                                       signed_user_info(self.get_secure_cookie))
            fmt, filters = verify_export_token(secret, token, username)
            scope = await SHORT.run(scope_for_user, engine, username)
        except NotAuthorized as exc:
            log.info("export refused for %r: %s", signed_in[:150], exc)
            self._refuse(403, str(exc))
            return
        except Exception:
            log.exception("could not check the export request")
            self._refuse(503, "The export failed: the ticket database could not be reached. Try again shortly.")
            return
        with tempfile.TemporaryDirectory(prefix="opsdash-export-") as folder:
            target = Path(folder) / f"export.{fmt}"
            try:
                result = await EXPORT.run(export_tickets, engine, scope, filters, fmt, target, channel="http",
                                          reads=get_read_route())
            except DatabaseBusy as exc:  # the server's fault, not the link's: try again later
                self._refuse(503, str(exc))
                return
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


def token_secret() -> str | None:
    """The key export links are signed with: ``OPSDASH_COOKIE_SECRET``, else the cookie secret the
    server was started with (``panel serve --cookie-secret``, which also signs the user cookie)."""
    return get_settings().cookie_secret or config.cookie_secret or None

