"""``opsdash serve``: the web dashboard, run as ``panel serve`` with OpsDash's settings."""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Sequence

from sqlalchemy import func, select

from data.errors import OpsDashError
from data.models import Municipality
from data.settings import MAKE_COOKIE_SECRET, opsdash_home

from .. import settings as settings_module
from .shared import open_engine, print_logins

APP_PATH = Path(__file__).parents[1] / "app.py"
#: The session of a closed tab is expired this long after its last connection went, checked
#: this often (ms): until then it is still a session, and still refreshes on live events.
UNUSED_SESSION_LIFETIME_MS, CHECK_UNUSED_SESSIONS_MS = 15_000, 5_000
#: zlib's level for the websocket's messages (6: zlib's default balance of CPU and size).
WEBSOCKET_COMPRESSION_LEVEL = 6


def _demo_environment() -> list[dict]:
    """SQLite by default, schema migrated, seeded when empty. Returns the demo logins."""
    # import cost: ~0.37 s (argon2, the seed's word lists): only when serving, not on every start.
    from data.seed import seed

    demo_file = opsdash_home() / "var" / "demo-logins.json"  # beside the default demo database
    engine = open_engine()
    with engine.connect() as conn:
        empty = conn.execute(select(func.count()).select_from(Municipality)).scalar_one() == 0
    if empty:
        print("seeding demo data (first run)...", flush=True)
        result = seed(engine, tickets=5000, wards=6, municipalities=2, random_seed=2026)
        demo_file.parent.mkdir(parents=True, exist_ok=True)
        demo_file.write_text(json.dumps(result.users, indent=2), encoding="utf-8")
        os.chmod(demo_file, 0o600)
        return result.users
    if demo_file.is_file():
        return json.loads(demo_file.read_text(encoding="utf-8"))
    print(f"note: {settings_module.get_settings().database_url} already has data; demo passwords are not known",
          flush=True)
    return []


def cmd_serve(args: argparse.Namespace) -> int:
    if args.demo:
        # Written to this process's environment, where the settings (read again here) and the app it
        # serves find them: demo mode, and a cookie secret of its own when none is configured.
        os.environ["OPSDASH_DEMO"] = "1"
        settings_module.reset()
        if not settings_module.get_settings().cookie_secret:
            os.environ["OPSDASH_COOKIE_SECRET"] = secrets.token_urlsafe(32)
            settings_module.reset()
    settings = settings_module.get_settings()
    if not settings.cookie_secret:
        raise OpsDashError(
            "OPSDASH_COOKIE_SECRET is not set: refusing to start without a cookie secret "
            f"(make one with {MAKE_COOKIE_SECRET}, or use --demo for a local demo)"
        )
    if args.demo:
        users = _demo_environment()
    else:
        open_engine()
        users = []
    # import cost: Panel (~1.15 s to import, python -X importtime) only for the command that serves:
    # every other command, `opsdash --help` included, starts without it.
    from ..panel_fence import sign_bokeh_sessions

    # The cookie secret stays in this process's environment (OPSDASH_COOKIE_SECRET, read by the
    # routes plugin): on a command line every local user could read it in the process list, and
    # a crash could print it.
    sign_bokeh_sessions()
    # Panel 1.10 looks for a cookie secret before it loads any plugin (1.9 after): hand it over in
    # this process's environment, where Panel reads it (PANEL_COOKIE_SECRET), never in argv.
    os.environ.setdefault("PANEL_COOKIE_SECRET", settings.cookie_secret)
    argv = panel_serve_argv(args.address, args.port, settings.allowed_origins)
    where = f"OpsDash on http://{'localhost' if args.address in ('0.0.0.0', '127.0.0.1') else args.address}:{args.port}/"
    if settings.log_format == "json":  # every line of the process is a JSON object, this first one too
        from ..log_format import JsonFormatter, Redactor  # import cost: none more (Panel is imported above)

        where = JsonFormatter(Redactor(settings)).format(logging.makeLogRecord(
            {"name": "opsdash.serve", "levelno": logging.INFO, "levelname": "INFO", "msg": where}))
    print(where, flush=True)
    print_logins(users)
    from panel.command import main as panel_main  # import cost: Panel's, see above

    sys.argv = argv
    panel_main()
    return 0


def panel_serve_argv(address: str, port: int, origins: Sequence[str]) -> list[str]:
    """The ``panel serve`` command line ``opsdash serve`` runs (also documented in README); no secret in it."""
    allowed = {f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"}
    allowed.update(origins)
    argv = [
        "panel", "serve", str(APP_PATH), "--address", address, "--port", str(port),
        "--oauth-provider", "opsdash",
        "--plugins", "dashboard_app.routes",
        # Expire sessions of closed tabs quickly so their callbacks stop (Panel expires a session only after its unused lifetime).
        "--check-unused-sessions", str(CHECK_UNUSED_SESSIONS_MS),
        "--unused-session-lifetime", str(UNUSED_SESSION_LIFETIME_MS),
        "--index", "app",
        # permessage-deflate on the websocket (Bokeh's own option; the browser offers it): the
        # document and every update go compressed. Measured in docs/performance.md, "Page weight".
        "--websocket-compression-level", str(WEBSOCKET_COMPRESSION_LEVEL),
    ]
    for origin in sorted(allowed):
        argv += ["--allow-websocket-origin", origin]
    return argv


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the web dashboard")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--demo", action="store_true",
                   help="local demo: SQLite, seeded when empty, simulator running, logins printed")
    p.set_defaults(handler=cmd_serve)
