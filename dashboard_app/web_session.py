"""Who a request is, decided on the server: signed cookies plus the session record (issue 15).

- Sign-in (``auth.py``) records a session (``data.web_sessions``) and sets two
  signed, HttpOnly cookies: ``user`` (the username, Panel's convention) and
  ``opsdash_session`` (the session id). A request is signed in only while that
  record is live and names the same user: signing out, a password change,
  disabling the account and "sign out everywhere" end it at once.
- The page's Bokeh session token is readable by any script in the page, so it
  carries no cookie (no credential): only ``page_claims`` (the user, the
  provider's claims, and the session's table key, which opens nothing).
- The websocket is accepted only when its token is signed by this server and
  names the same user and session as the websocket's own cookies.
- An open page ends as soon as its sign-in is revoked in any process
  (``RevocationWatch``: the announcements of ``data.web_sessions``, over Redis
  when configured), and in any case at its next check (``SESSION_CHECK_MS``).

The hooks into Panel's server that call these functions are wired in
``panel_fence.py``; nothing here uses Panel's private API (what touches it,
Panel's ``id_token`` cookie format among it, is in ``components/panel_compat.py``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from datetime import timedelta
from typing import Any, Callable

import panel as pn
from bokeh.util.token import check_token_signature, get_token_payload
from tornado.web import decode_signed_value
from tornado.websocket import WebSocketHandler

from components.panel_compat import decode_id_token
from data.bus import BusUnavailable, RedisBus, bus_for
from data.hub import backoff_delay
from data.web_sessions import REVOKED_CHANNEL, revoked_keys, session_key, valid_session
from data.workers import SHORT

from .settings import get_engine, get_settings

log = logging.getLogger("opsdash.session")
SESSION_COOKIE = "opsdash_session"
#: Request headers a page's token never carries (its cookies are replaced by ``page_claims``).
PRIVATE_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization"})
#: How often an open dashboard asks whether its session still stands (a revoked one closes within this).
SESSION_CHECK_MS = 20_000
OWN_PROVIDERS = frozenset({"opsdash"})


def session_lifetime() -> timedelta:
    return timedelta(hours=get_settings().session_hours)


def _cookie_days() -> float:
    return session_lifetime().total_seconds() / 86400


def signed_cookie(get_secure_cookie: Callable[..., bytes | None], name: str) -> str | None:
    """A signed cookie's value (None when absent, forged or older than a session can live)."""
    raw = get_secure_cookie(name, max_age_days=_cookie_days())
    return raw.decode("utf-8", "replace") if raw else None


def signed_user_info(get_secure_cookie: Callable[..., bytes | None]) -> dict | None:
    """The OAuth/OIDC claims Panel keeps in its signed ``id_token`` cookie (decrypted when Panel encrypts)."""
    raw = get_secure_cookie("id_token", max_age_days=_cookie_days())
    return decode_id_token(raw) if raw else None


def _request_cookie_reader(request) -> Callable[..., bytes | None]:
    """``get_secure_cookie`` for a bare tornado request (Bokeh hands ``process_request`` no handler)."""
    def read(name: str, max_age_days: float = 31) -> bytes | None:
        morsel = request.cookies.get(name)
        if morsel is None or not pn.config.cookie_secret:
            return None
        return decode_signed_value(pn.config.cookie_secret, name, morsel.value, max_age_days=max_age_days)

    return read


def page_claims(request) -> dict[str, Any]:
    """What a page's (script-readable) token may say about the request: no cookie, no credential header."""
    read = _request_cookie_reader(request)
    session_id = signed_cookie(read, SESSION_COOKIE)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in PRIVATE_HEADERS}
    claims = {"user": signed_cookie(read, "user"), "user_info": signed_user_info(read),
              "session": session_key(session_id) if session_id else None}
    return {"cookies": {}, "headers": headers, "opsdash": claims}


def session_claims() -> dict[str, Any]:
    """The claims of the served session being built (empty outside a server session, e.g. a notebook)."""
    context = pn.state.curdoc.session_context if pn.state.curdoc else None
    if context is None:
        return {}
    try:
        claims = context.token_payload.get("opsdash")
    except Exception:  # a session without a token (Panel's own server-side sessions)
        return {}
    return claims if isinstance(claims, dict) else {}


def websocket_token(request) -> str | None:
    """The Bokeh token a websocket upgrade carries (``Sec-WebSocket-Protocol: bokeh, <token>``)."""
    parts = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    return parts[1] if len(parts) == 2 and parts[0] == "bokeh" else None


async def confirm_user(handler, user: str) -> str | None:
    """``user`` when the request's session stands, else None (Panel then sends it to /login, or a 403).

    Called for every authenticated Panel/Bokeh request (page, websocket). Our
    own provider's sign-ins need a live session record for the same user;
    a websocket also needs a token this server signed, for this user and
    this session (a token cut from another page cannot carry another user in).
    """
    key = None
    if pn.config.oauth_provider in OWN_PROVIDERS:
        session_id = signed_cookie(handler.get_secure_cookie, SESSION_COOKIE)
        try:
            record = await SHORT.run(valid_session, get_engine(), session_id=session_id)
        except Exception:  # database down: nobody is let in on an unchecked session
            log.warning("could not check a session: database unavailable")
            return None
        if record is None or record.username != user:
            return None
        key = record.key
    if isinstance(handler, WebSocketHandler) and not _token_matches(handler, user, key):
        log.info("websocket refused: its token does not belong to this sign-in")
        return None
    return user


def _token_matches(handler, user: str, key: str | None) -> bool:
    token = websocket_token(handler.request)
    app = handler.application
    if not token or not app.sign_sessions:  # unsigned tokens can be made by anyone: refuse them all
        return False
    try:
        if not check_token_signature(token, secret_key=app.secret_key, signed=True):
            return False
        claims = get_token_payload(token).get("opsdash") or {}
    except Exception:
        return False
    return claims.get("user") == user and claims.get("session") == key


class RevocationWatch:
    """This process's open sessions by sign-in, ended the moment any process announces a revocation.

    One subscription per process to ``data.web_sessions.REVOKED_CHANNEL``
    (Redis when configured, else the in-process bus: the same code either
    way); the announcement names table keys, and each open page watching one
    of them ends at once. Lost announcements (Redis down) cost only time:
    every page still checks its record every ``SESSION_CHECK_MS``.
    """

    def __init__(self) -> None:
        self._watchers: dict[str, dict[int, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self.ended = 0  # pages ended by an announcement (in /health's details)

    def watch(self, key: str, end: Callable[[], None]) -> None:
        with self._lock:
            self._watchers.setdefault(key, {})[id(end)] = end

    def unwatch(self, key: str, end: Callable[[], None]) -> None:
        with self._lock:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.pop(id(end), None)
                if not watchers:
                    del self._watchers[key]

    def revoked(self, keys: list[str]) -> int:
        """End every page watching one of ``keys``; how many."""
        with self._lock:
            ends = [end for key in keys for end in self._watchers.pop(key, {}).values()]
        for end in ends:
            try:
                end()
            except Exception:
                log.exception("could not end a page whose sign-in was revoked")
        self.ended += len(ends)
        return len(ends)

    @property
    def watched(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._watchers.values())

    def start(self, redis_url: str | None) -> None:
        """Subscribe on the running loop (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        bus = RedisBus(redis_url, client_name=f"opsdash-sessions-{os.getpid()}") if redis_url else bus_for(None)
        self._task = asyncio.get_running_loop().create_task(self._listen(bus), name="opsdash-revocations")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _listen(self, bus) -> None:
        attempt = 0
        while True:
            subscription = None
            try:
                subscription = await bus.subscribe(REVOKED_CHANNEL)
                attempt = 0
                async for batch in subscription.batches():
                    for _channel, raw in batch:
                        self.revoked(revoked_keys(raw))
                raise BusUnavailable("subscription ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == 0:
                    log.warning("sign-out announcements paused (%s): open pages rely on their session checks",
                                type(exc).__name__)
            finally:
                if subscription is not None:
                    await subscription.close()
            await asyncio.sleep(backoff_delay(attempt, 0.5, 30.0))
            attempt += 1


REVOCATIONS = RevocationWatch()


def watch_session(on_end: Callable[[], None]) -> None:
    """While this served session is open, end it (``on_end``) as soon as its sign-in is revoked or expires.

    At once when a revocation is announced (``REVOCATIONS``, from any process
    when Redis is configured); in any case within ``SESSION_CHECK_MS``, when
    the page's own check finds the record ended.
    """
    key = session_claims().get("session")
    doc = pn.state.curdoc
    if not key or doc is None:
        return
    ended = False

    def end() -> None:
        nonlocal ended
        if ended:
            return
        ended = True
        callback.stop()
        REVOCATIONS.unwatch(key, end)
        doc.add_next_tick_callback(on_end)  # under the document's lock, as Bokeh requires

    async def check() -> None:
        try:
            record = await SHORT.run(valid_session, get_engine(), key=key)
        except Exception:  # database down: the next check decides
            return
        if record is None:
            end()

    callback = pn.state.add_periodic_callback(check, period=SESSION_CHECK_MS)
    REVOCATIONS.watch(key, end)
    pn.state.on_session_destroyed(lambda _context: REVOCATIONS.unwatch(key, end))
