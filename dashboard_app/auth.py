"""Sign-in against the users table (Panel auth provider ``opsdash``).

Registered under the ``panel.auth`` entry-point group, so
``panel serve ... --oauth-provider opsdash --cookie-secret ...`` uses it.
Panel's BasicLoginHandler compares plaintext passwords; we override
``_validate`` to verify argon2 hashes and throttle guessing.

Keep module-level imports light: Panel imports this module while
``panel.auth`` itself is still being imported.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

import tornado.escape
from panel.auth import BasicLoginHandler

log = logging.getLogger("opsdash.auth")
GENERIC_ERROR = "Invalid username or password."
THROTTLED_ERROR = "Too many sign-in attempts. Wait a few minutes and try again."
UNAVAILABLE_ERROR = "Sign-in is unavailable right now (database unreachable). Try again shortly."
#: The only texts the sign-in page shows for ``?error=``: anything else in
#: the URL (a phishing text, markup) is replaced by the generic message.
KNOWN_ERRORS = (GENERIC_ERROR, THROTTLED_ERROR, UNAVAILABLE_ERROR)
TEMPLATE_DIR = Path(__file__).with_name("templates")
ACCENT = "#0b6e4f"


def login_page(login_endpoint: str, error: str) -> str:
    """The styled sign-in page (fields ``username`` and ``password``), escaped by Jinja."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True)
    shown = "" if not error else (error if error in KNOWN_ERRORS else GENERIC_ERROR)
    return env.get_template("login.html").render(login_endpoint=login_endpoint, errormessage=shown, accent=ACCENT)


class LoginThrottle:
    """Failed attempts per key within a sliding window (per process).

    Keys are both the username and the client address, so one address
    cannot guess many accounts and many addresses cannot hammer one account.
    """

    def __init__(self, max_attempts: int, window_s: float) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float]:
        q = self._failures[key]
        while q and now - q[0] > self.window_s:
            q.popleft()
        if not q:
            self._failures.pop(key, None)
            q = self._failures[key]
        return q

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(len(self._trim(k, now)) >= self.max_attempts for k in keys)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._trim(key, now).append(now)
            if len(self._failures) > 100_000:  # bound memory under a spray attack
                for key in list(self._failures)[: len(self._failures) // 2]:
                    self._failures.pop(key, None)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


_throttle: LoginThrottle | None = None


def get_throttle() -> LoginThrottle:
    global _throttle
    if _throttle is None:
        from .settings import get_settings

        s = get_settings()
        _throttle = LoginThrottle(s.login_max_attempts, s.login_window_s)
    return _throttle


def _landing_url(root_path: str | None) -> str:
    """Where a sign-in without ``?next=`` lands.

    Panel's ``state.base_url`` is the ``--root-path`` when one is given. Otherwise ``./``, resolved
    by the browser against the sign-in URL: under ``panel serve --prefix /opsdash`` (or a proxy that
    serves OpsDash at a sub-path) that is the app's root, where an absolute ``/`` would be a 404.
    """
    return root_path if root_path and root_path != "/" else "./"


class OpsDashLoginHandler(BasicLoginHandler):
    """``/login``: checks the users table's argon2 hashes, throttled."""

    def get(self) -> None:
        from panel.auth import _validate_next_url
        from panel.io.state import state

        next_url = _validate_next_url(self.get_argument("next", _landing_url(state.base_url)))
        if next_url:
            self.set_cookie("next_url", next_url, httponly=True)
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")  # no clickjacking of the sign-in form
        self.write(login_page(self._login_endpoint, self.get_argument("error", "")))

    def _validate(self, username: str, password: str) -> bool:
        from data.users import authenticate

        from .settings import get_engine

        keys = (f"user:{username.lower()[:150]}", f"ip:{self.request.remote_ip}")
        throttle = get_throttle()
        if throttle.blocked(*keys):
            self._error = THROTTLED_ERROR
            log.warning("sign-in throttled for %s from %s", username[:150], self.request.remote_ip)
            return False
        try:
            account = authenticate(get_engine(), username, password)
        except Exception:  # database down: say so without a traceback
            log.exception("sign-in failed: database unavailable")
            self._error = UNAVAILABLE_ERROR
            return False
        if account is None:
            throttle.failed(*keys)
            self._error = GENERIC_ERROR
            log.info("failed sign-in for %r from %s", username[:150], self.request.remote_ip)
            return False
        throttle.succeeded(keys[0])
        log.info("sign-in: %s (%s)", account.username, account.role)
        return True

    def _prefetch(self, username: str) -> None:
        from .session import prefetch_dashboard
        from .settings import get_engine

        try:
            prefetch_dashboard(get_engine(), username)
        except Exception:  # only a head start: the page loads its figures anyway
            log.exception("could not start loading the dashboard of %s", username[:150])

    async def post(self):
        username = self.get_argument("username", "")
        password = self.get_argument("password", "")
        self._error = GENERIC_ERROR
        # In a worker thread: an argon2 verification takes ~60 ms of CPU by design, during which
        # the event loop keeps serving every open dashboard (and other sign-ins) instead of stalling.
        valid = await asyncio.get_running_loop().run_in_executor(None, self._validate, username, password)
        if valid:
            self.set_current_user(username)
            from panel.auth import _validate_next_url
            from panel.io.state import state

            landing = _landing_url(state.base_url)
            target = _validate_next_url(self.get_cookie("next_url", landing)) or landing
            if "?" not in target:  # the plain dashboard (a link's filters would make other queries)
                self._prefetch(username)
            self.redirect(target)
            return
        # Relative, like the landing page: the form is at <prefix>/login whatever the prefix.
        self.redirect("./" + self._login_endpoint.lstrip("/") + "?error=" + tornado.escape.url_escape(self._error))
