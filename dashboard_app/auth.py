"""Sign-in against the users table (Panel auth provider ``opsdash``).

Registered under the ``panel.auth`` entry-point group, so
``panel serve ... --oauth-provider opsdash --cookie-secret ...`` uses it.
Panel's BasicLoginHandler compares plaintext passwords; our ``post``
verifies argon2 hashes instead and throttles guessing.

Panel imports this module while ``panel.auth`` itself is still being
imported (the entry point loop at its end): import ``panel.auth`` before
this module, never this module first.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import panel as pn
import tornado.escape
import tornado.web
from panel.auth import BasicLoginHandler

from components.panel_compat import encode_id_token, login_endpoint, validate_next_url
from data.errors import DatabaseBusy
from data.metrics import SIGN_INS, THROTTLED
from data.users import authenticate
from data.web_sessions import start_session
from data.workers import SHORT

from . import panel_fence
from .log_format import USER, RequestContext
from .session import prefetch_dashboard
from .settings import get_engine, get_read_route, get_settings
from .throttle import get_throttle
from .web_session import SESSION_COOKIE, session_lifetime

# Panel imports this module (its auth entry point) before `panel serve` reads Bokeh's settings:
# the one moment at which Bokeh can still be told to sign its session tokens.
panel_fence.sign_bokeh_sessions()

log = logging.getLogger("opsdash.auth")
GENERIC_ERROR = "Invalid username or password."
THROTTLED_ERROR = "Too many sign-in attempts. Wait a few minutes and try again."
UNAVAILABLE_ERROR = "Sign-in is unavailable right now (database unreachable). Try again shortly."
CROSS_SITE_ERROR = "Sign-in refused: the form was not sent from this site's sign-in page. Reload the page and try again."
#: The only texts the sign-in page shows for ``?error=``: anything else in
#: the URL (a phishing text, markup) is replaced by the generic message.
KNOWN_ERRORS = (GENERIC_ERROR, THROTTLED_ERROR, UNAVAILABLE_ERROR)
#: How long a sign-in's redirect waits for what the dashboard shows first (figures, median, the table's
#: first page), loaded from the moment the password checks out. Ready when the browser asks for the page,
#: they go out with it: the browser lays the page out once, with no placeholders to fill over a second
#: round trip (10M tickets, a manager after a change, paired: 2.56 / 2.15 -> 2.03 / 2.00 s to rendered;
#: docs/performance.md). Slower loads end the wait: the page then comes with placeholders, as before.
FIGURES_WAIT_S = 0.6
TEMPLATE_DIR = Path(__file__).with_name("templates")
ACCENT = "#0b6e4f"


def login_page(login_endpoint: str, error: str, xsrf_token: str = "") -> str:
    """The styled sign-in page (fields ``username``, ``password`` and the CSRF ``_xsrf``), escaped by Jinja."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True)
    shown = "" if not error else (error if error in KNOWN_ERRORS else GENERIC_ERROR)
    return env.get_template("login.html").render(login_endpoint=login_endpoint, errormessage=shown, accent=ACCENT,
                                                 xsrf_token=xsrf_token)


def same_origin(origin_or_referer: str, host: str, allowed: tuple[str, ...]) -> bool:
    """Whether an Origin/Referer names this site: the request's own host or an allowed origin."""
    try:
        netloc = urlsplit(origin_or_referer).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and (netloc == host.lower() or netloc in {a.lower() for a in allowed})


def _landing_url(root_path: str | None) -> str:
    """Where a sign-in without ``?next=`` lands.

    Panel's ``state.base_url`` is the ``--root-path`` when one is given. Otherwise ``./``, resolved
    by the browser against the sign-in URL: under ``panel serve --prefix /opsdash`` (or a proxy that
    serves OpsDash at a sub-path) that is the app's root, where an absolute ``/`` would be a 404.
    """
    return root_path if root_path and root_path != "/" else "./"


class OpsDashLoginHandler(RequestContext, BasicLoginHandler):
    """``/login``: checks the users table's argon2 hashes, throttled."""

    def get(self) -> None:
        next_url = validate_next_url(self.get_argument("next", _landing_url(pn.state.base_url)))
        if next_url:
            self.set_cookie("next_url", next_url, httponly=True)
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")  # no clickjacking of the sign-in form
        token = self.xsrf_token.decode("ascii")  # also sets the _xsrf cookie the POST is checked against
        self.write(login_page(login_endpoint(self), self.get_argument("error", ""), token))

    def check_xsrf_cookie(self) -> None:
        """Tornado calls this before POST only when the whole server has xsrf_cookies on; ``post`` calls
        ``_refuse_cross_site`` itself, so a login form is protected on every server."""

    def _refuse_cross_site(self) -> bool:
        """Login CSRF: refuse a POST that is not from our own form (Origin/Referer, then the form's token)."""
        allowed = get_settings().allowed_origins
        origin = self.request.headers.get("Origin") or self.request.headers.get("Referer") or ""
        reason = None
        if not same_origin(origin, self.request.host, allowed):
            reason = "cross-site origin"
        else:
            try:
                super().check_xsrf_cookie()
            except tornado.web.HTTPError:
                reason = "missing or wrong form token"
        if reason is None:
            return False
        log.warning("sign-in POST refused (%s) from %s", reason, self.request.remote_ip)
        SIGN_INS.labels("refused").inc()
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(CROSS_SITE_ERROR + "\n")
        return True

    def _check_password(self, username: str, password: str) -> bool:
        """Panel's BasicLoginHandler compares plaintext (its ``_validate``): argon2 here, throttled, off the loop."""
        address = self.request.remote_ip or "unknown"
        throttle = get_throttle()
        if not throttle.reserve(username, address):  # the slot is taken atomically, before the check
            self._error = THROTTLED_ERROR
            THROTTLED.inc()
            log.warning("sign-in throttled for %s from %s", username[:150], self.request.remote_ip)
            return False
        try:
            account = authenticate(get_engine(), username, password)
        except Exception:  # database down: say so without a traceback
            log.exception("sign-in failed: database unavailable")
            self._error = UNAVAILABLE_ERROR
            return False
        if account is None:
            self._error = GENERIC_ERROR
            log.info("failed sign-in for %r from %s", username[:150], self.request.remote_ip)
            return False
        throttle.succeeded(username, address)
        USER.set(account.username)  # this worker's copy of the request's context: the line names its user
        log.info("sign-in: %s (%s)", account.username, account.role)
        return True

    def _start_session(self, username: str) -> str:
        return start_session(get_engine(), username, session_lifetime())

    def set_session_cookies(self, username: str, session_id: str) -> None:
        """The signed sign-in cookies; they expire with the session (HttpOnly, SameSite: web_headers)."""
        days = session_lifetime().total_seconds() / 86400
        options = dict(expires_days=days, httponly=True, path=pn.config.cookie_path, samesite="Lax")
        self.clear_cookie("is_guest")
        self.set_secure_cookie("user", username, **options)
        self.set_secure_cookie(SESSION_COOKIE, session_id, **options)
        # As Panel's own basic sign-in sets it (pn.state.user_info reads it).
        self.set_secure_cookie("id_token", encode_id_token({"user": username}), **options)

    async def _prefetch(self, username: str) -> None:
        """Start loading what the dashboard shows first; wait for it up to ``FIGURES_WAIT_S``."""
        try:
            loads = prefetch_dashboard(get_engine(), username, get_read_route())
        except Exception:  # only a head start: the page loads its figures anyway
            log.exception("could not start loading the dashboard of %s", username[:150])
            return
        if loads:  # awaited: the event loop serves everyone else meanwhile
            await asyncio.wait([asyncio.wrap_future(load) for load in loads], timeout=FIGURES_WAIT_S)

    async def post(self):
        if self._refuse_cross_site():
            return
        username = self.get_argument("username", "")
        password = self.get_argument("password", "")
        self._error = GENERIC_ERROR
        # In a worker thread: an argon2 verification takes ~60 ms of CPU by design, during which
        # the event loop keeps serving every open dashboard (and other sign-ins) instead of stalling.
        try:
            valid = await SHORT.run(self._check_password, username, password)
        except DatabaseBusy:  # no worker free for as long as a sign-in may wait (logged by the lane)
            self._error, valid = UNAVAILABLE_ERROR, False
        session_id = None
        if valid:
            try:
                session_id = await SHORT.run(self._start_session, username)
            except Exception:
                log.exception("sign-in failed: could not record the session")
                self._error, valid = UNAVAILABLE_ERROR, False
        outcome = "ok" if valid and session_id else {THROTTLED_ERROR: "throttled", UNAVAILABLE_ERROR: "unavailable"}.get(
            self._error, "failed")
        SIGN_INS.labels(outcome).inc()
        if valid and session_id:
            USER.set(username)
            self.set_session_cookies(username, session_id)
            landing = _landing_url(pn.state.base_url)
            target = validate_next_url(self.get_cookie("next_url", landing)) or landing
            if "?" not in target:  # the plain dashboard (a link's filters would make other queries)
                await self._prefetch(username)
            self.redirect(target)
            return
        # Relative, like the landing page: the form is at <prefix>/login whatever the prefix.
        self.redirect("./" + login_endpoint(self).lstrip("/") + "?error=" + tornado.escape.url_escape(self._error))
