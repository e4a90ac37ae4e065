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

The hooks into Panel's server that call these functions are wired in
``panel_fence.py``; nothing here uses Panel's private API (what touches it,
Panel's ``id_token`` cookie format among it, is in ``components/panel_compat.py``).
"""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any, Callable

import panel as pn
from bokeh.util.token import check_token_signature, get_token_payload
from tornado.web import decode_signed_value
from tornado.websocket import WebSocketHandler

from components.panel_compat import decode_id_token
from data.web_sessions import session_key, valid_session

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
            record = await asyncio.to_thread(valid_session, get_engine(), session_id=session_id)
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


def watch_session(on_end: Callable[[], None]) -> None:
    """While this served session is open, end it (``on_end``) soon after its sign-in is revoked or expires."""
    key = session_claims().get("session")
    doc = pn.state.curdoc
    if not key or doc is None:
        return

    async def check() -> None:
        try:
            record = await asyncio.to_thread(valid_session, get_engine(), key=key)
        except Exception:  # database down: the next check decides
            return
        if record is None:
            callback.stop()
            doc.add_next_tick_callback(on_end)  # under the document's lock, as Bokeh requires

    callback = pn.state.add_periodic_callback(check, period=SESSION_CHECK_MS)
