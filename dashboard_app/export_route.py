"""``/export/download``: the streaming HTTP route for large exports.

Two checks, both on the server: the request's sign-in (``request_user``:
Panel's signed ``user`` cookie, the live session record, mapped to a
users-table name exactly as the dashboard maps it), and a short-lived signed
token that names the same user, the format and the filters
(``data.export_token``). The Scope is built from that user's
database record, never from the request. The export runs in a worker
thread into a temporary file (memory stays flat), then streams out in
blocks; the file is deleted afterwards. Audited with channel ``http``, as
failed when no file went out (the database went away, the server stopped:
a 503 with a message, never a partial file).
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import tornado.iostream
import tornado.web

from data.audit import record_failed_export
from data.errors import DatabaseBusy, ExportCancelled, NotAuthorized, OpsDashError
from data.export import MEDIA_TYPES, export_tickets
from data.export_token import sign_export_token, verify_export_token
from data.filters import TicketFilters
from data.scope import Scope, scope_for_user
from data.workers import EXPORT, SHORT

from . import shutdown
from .log_format import USER, RequestContext
from .request_user import SignInRequired, cookie_secret, signed_in_username
from .settings import get_engine, get_read_route

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


class ExportDownloadHandler(RequestContext, tornado.web.RequestHandler):
    def _refuse(self, code: int, message: str) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(message + "\n")

    async def get(self) -> None:
        secret = token_secret()
        try:
            token = self.get_argument("token", "")
        except tornado.web.HTTPError:  # not text (e.g. %FF%FE): a broken link, not a server fault
            token = None
        try:
            # The same mapping the dashboard applies (OIDC: the provider's verified e-mail -> users row),
            # so the token, minted for the mapped username, matches only that user's cookie.
            username = await signed_in_username(self)
            USER.set(username)  # the lines of this request name its user (JSON logs)
            if token is None:
                self._refuse(400, "The download link is not valid; start the export again from the dashboard.")
                return
            fmt, filters = verify_export_token(secret, token, username)
            scope = await SHORT.run(scope_for_user, get_engine(), username)
        except SignInRequired as exc:
            self._refuse(401, "Sign in first: your sign-in has ended." if exc.ended
                         else "Sign in first: exports need a signed-in user.")
            return
        except NotAuthorized as exc:
            log.info("export refused: %s", exc)
            self._refuse(403, str(exc))
            return
        except Exception:
            log.exception("could not check the export request")
            self._refuse(503, "The export failed: the ticket database could not be reached. Try again shortly.")
            return
        await send_export(self, scope, filters, fmt, "http", self._refuse)


async def send_export(handler: tornado.web.RequestHandler, scope: Scope, filters: TicketFilters, fmt: str,
                      channel: str, refuse: Callable[[int, str], None]) -> None:
    """Export in the EXPORT lane into a temporary file (memory stays flat), then stream it in blocks.

    The one writer of a streamed export (``/export/download`` and the API's ``/api/v1/export/...``):
    ``data.export.export_tickets``, audited with ``channel``. ``refuse(code, message)`` answers an error
    before anything was sent: 503 when the lane is full, the database fails or the server is stopping
    (then the audit row says failed), 400 for a bad request.
    """
    if shutdown.shutting_down():
        refuse(503, shutdown.RESTART_REFUSAL)
        return
    engine = get_engine()
    with tempfile.TemporaryDirectory(prefix="opsdash-export-") as folder, shutdown.running_export():
        target = Path(folder) / f"export.{fmt}"
        started = time.perf_counter()
        try:
            # total=0: no count first; the progress callback only lets a shutdown stop the export.
            running = EXPORT.start(export_tickets, engine, scope, filters, fmt, target, channel=channel,
                                   progress=shutdown.check_export, total=0, reads=get_read_route())
            if not await shutdown.cut_or(running):
                running.add_done_callback(_ignore_outcome)
                raise shutdown.ExportCut(shutdown.CUT_MESSAGE)
            result = running.result()
        except ExportCancelled as exc:
            # The server is going away and the export was still running (a slow or blocked
            # query): a clear answer now, no file, and the audit row says it failed.
            refuse(503, str(exc))
            await SHORT.run(record_failed_export, engine, scope, fmt=fmt, filters=filters, channel=channel,
                            duration_ms=int((time.perf_counter() - started) * 1000))
            return
        except DatabaseBusy as exc:  # the server's fault, not the request's: try again later
            refuse(503, str(exc))
            return
        except OpsDashError as exc:
            refuse(400, str(exc))
            return
        except Exception:
            log.exception("streamed export failed")
            refuse(503, "The export failed: the ticket database could not be reached. Try again shortly.")
            return
        handler.set_header("Content-Type", MEDIA_TYPES[fmt])
        handler.set_header("Content-Disposition", f'attachment; filename="{result.filename}"')
        handler.set_header("Content-Length", str(target.stat().st_size))
        handler.set_header("Cache-Control", "no-store")
        handler.set_header("X-Content-Type-Options", "nosniff")
        try:
            with open(target, "rb") as file:
                while block := file.read(BLOCK_SIZE):
                    handler.write(block)
                    await handler.flush()  # one block in memory at a time; waits for a slow client
            handler.finish()
        except tornado.iostream.StreamClosedError:  # the client went away; the export is audited anyway
            log.info("export download by %r closed by the client", (scope.username or "")[:150])


def _ignore_outcome(future) -> None:
    """A cut export's result or error, read so that asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


def token_secret() -> str | None:
    """The key export links are signed with: ``OPSDASH_COOKIE_SECRET``, else the cookie secret the
    server was started with (``panel serve --cookie-secret``, which also signs the user cookie)."""
    return cookie_secret()

