"""Real ``opsdash`` processes: the command line, a served dashboard on a free port."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence
from urllib.error import URLError
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIR = ROOT / "test-output"
#: At least 32 characters: shorter cookie secrets stop the server (data/settings.py).
TEST_COOKIE_SECRET = "test-cookie-secret-0123456789-abcdefgh"
#: The operator token of test servers: /health shows its details only with it (issue 15).
TEST_METRICS_TOKEN = "test-metrics-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def opsdash_env(database_url: str | None, **settings: str) -> dict[str, str]:
    """The environment of an ``opsdash`` child process: only the OPSDASH_* values given here."""
    # Not this test process's BOKEH_* either (its import of our auth module set some): a server must
    # set up Bokeh by itself, as in production.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSDASH_", "BOKEH_"))}
    env["OPSDASH_FAST_PASSWORD_HASH"] = "1"
    if database_url is not None:
        env["OPSDASH_DATABASE_URL"] = database_url
    env.update(settings)
    return env


def run_opsdash(*args: str, database_url: str | None, cwd: Path, stdin: str | None = None,
                timeout: float = 300, **settings: str) -> subprocess.CompletedProcess:
    """Run the ``opsdash`` command line as a real process (in ``cwd``, so no stray .env is read)."""
    return subprocess.run(
        [sys.executable, "-m", "dashboard_app.cli", *args], cwd=cwd, env=opsdash_env(database_url, **settings),
        input=stdin, capture_output=True, text=True, timeout=timeout,
    )


class OpsDashServer:
    """A real ``opsdash serve`` process on a free port.

    ``demo=True`` runs ``opsdash serve --demo`` in ``cwd`` without a cookie
    secret (pass ``database_url=None`` for the demo's own SQLite under
    ``cwd/var``); its printed logins are in ``log()``. ``panel_convention=True``
    runs the Panel way instead: ``panel serve dashboard_app/app.py`` with the
    flags README documents. ``prefix="/opsdash"`` (``panel serve --prefix``,
    ``url`` then ends in it) and an ``oauth_provider`` other than ``opsdash``
    (its options in ``panel_args``) imply the Panel way: ``opsdash serve`` has
    neither option.
    """

    def __init__(self, database_url: str | None, log_dir: Path, redis_url: str | None = None,
                 env: dict[str, str] | None = None, cookie_secret: str | None = TEST_COOKIE_SECRET,
                 demo: bool = False, cwd: Path = ROOT, panel_convention: bool = False, prefix: str = "",
                 oauth_provider: str = "opsdash", panel_args: Sequence[str] = (), secret_in_env: bool = True) -> None:
        self.port = free_port()
        self.demo = demo
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.oauth_provider = oauth_provider
        self.panel_args = list(panel_args)
        self.panel_convention = panel_convention or bool(self.prefix) or oauth_provider != "opsdash"
        self.cwd = cwd
        self.database_url = database_url
        self.redis_url = redis_url
        self.cookie_secret = cookie_secret
        self.log_path = log_dir / f"opsdash-{self.port}.log"
        self.extra_env = env or {}
        self.secret_in_env = secret_in_env  # False: the cookie secret reaches only Panel (PANEL_COOKIE_SECRET)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def command(self) -> list[str]:
        where = ["--port", str(self.port), "--address", "127.0.0.1"]
        if self.panel_convention:
            return [sys.executable, "-m", "panel", "serve", str(ROOT / "dashboard_app" / "app.py"), *where,
                    "--oauth-provider", self.oauth_provider,
                    "--plugins", "dashboard_app.routes", "--allow-websocket-origin", f"127.0.0.1:{self.port}",
                    *(["--prefix", self.prefix] if self.prefix else []), *self.panel_args]
        return [sys.executable, "-m", "dashboard_app.cli", "serve", *where, *(["--demo"] if self.demo else [])]

    def start(self, timeout: float = 60) -> None:
        settings: dict[str, str] = {}
        if self.cookie_secret and not self.demo:
            # README's Panel way: the secret in the environment, never on the command line.
            settings["OPSDASH_COOKIE_SECRET" if self.secret_in_env else "PANEL_COOKIE_SECRET"] = self.cookie_secret
            if self.panel_convention:  # Panel 1.10 wants its own variable before any plugin loads (README)
                settings["PANEL_COOKIE_SECRET"] = self.cookie_secret
        if self.redis_url:
            settings["OPSDASH_REDIS_URL"] = self.redis_url
        settings["OPSDASH_METRICS_TOKEN"] = TEST_METRICS_TOKEN
        env = opsdash_env(self.database_url, **{**settings, **self.extra_env})  # a test's env wins
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), cwd=self.cwd, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"opsdash serve exited early:\n{self.log()}")
            try:
                with urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"opsdash serve did not answer /health within {timeout}s:\n{self.log()}")

    def health(self) -> dict:
        """/health with the operator token: the details (hub counters, sessions)."""
        import json
        from urllib.request import Request

        request = Request(f"{self.url}/health", headers={"Authorization": f"Bearer {TEST_METRICS_TOKEN}"})
        with urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def log(self, tail: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if getattr(self, "_log", None):
            self._log.close()


@contextlib.contextmanager
def seeded_server(database_url: str, log_dir: Path, seed_args: dict, *, random_seed: int,
                  **server_args) -> Iterator[tuple]:
    """(seed result, started OpsDashServer) on a database seeded with ``seed_args`` and ``random_seed``."""
    from data.db import get_engine
    from data.seed import seed

    result = seed(get_engine(database_url), random_seed=random_seed, **seed_args)
    server = OpsDashServer(database_url=database_url, log_dir=log_dir, **server_args)
    server.start()
    try:
        yield result, server
    finally:
        server.stop()


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """``app`` (a function building a page) served by Panel in this process; yields its URL."""
    import panel as pn

    from .live import wait_until

    port = free_port()
    # Sessions of closed clients are destroyed within ~0.2 s, so none outlives the test.
    server = pn.serve({"app": app}, port=port, address="127.0.0.1", threaded=True, show=False,
                      websocket_origin=[f"127.0.0.1:{port}"],
                      check_unused_sessions_milliseconds=100, unused_session_lifetime_milliseconds=100)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/no-such-page"), what="the server")
        yield f"http://127.0.0.1:{port}/app"
    finally:
        server.stop()


def answers(url: str) -> bool:
    """Any HTTP answer (a 404 too) means the server is up; asking for the app would warm the cache."""
    try:
        with urlopen(url, timeout=5):
            return True
    except OSError as exc:
        return getattr(exc, "code", None) is not None
