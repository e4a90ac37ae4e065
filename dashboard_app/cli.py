"""The ``opsdash`` command line.

Each subcommand is a small function taking the parsed arguments and
returning an exit code; errors OpsDash raises on purpose print as one line
(``opsdash: error: ...``) with exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Callable, Sequence

from sqlalchemy.exc import SQLAlchemyError

from data.errors import OpsDashError
from data.settings import MAKE_COOKIE_SECRET, opsdash_home

APP_PATH = Path(__file__).with_name("app.py")
#: The session of a closed tab is expired this long after its last connection went, checked
#: this often (ms): until then it is still a session, and still refreshes on live events.
UNUSED_SESSION_LIFETIME_MS, CHECK_UNUSED_SESSIONS_MS = 15_000, 5_000
Handler = Callable[[argparse.Namespace], int]


def _engine(migrate: bool = True):
    from data.db import migrate as run_migrations

    from .settings import get_engine

    engine = get_engine()
    if migrate:
        run_migrations(engine)
    return engine


def cmd_init_db(args: argparse.Namespace) -> int:
    from data.db import schema_revision

    engine = _engine()
    print(f"database ready at revision {schema_revision(engine)}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from data.seed import seed

    engine = _engine()
    result = seed(
        engine, tickets=args.tickets, wards=args.wards, municipalities=args.municipalities,
        random_seed=args.random_seed,
    )
    if args.json:
        print(result.to_json())
    else:
        print(f"seeded {len(result.municipalities)} municipalities, {len(result.users)} users, {result.tickets} tickets")
        print_logins(result.users)
    return 0


def print_logins(users: Sequence[dict]) -> None:
    for user in users:
        extra = f", {user['ward_id']}" if user["role"] == "ward_councillor" else ""
        print(f"login: {user['username']} / {user['password']} ({user['role']}{extra})", flush=True)


def read_password(prompt: str = "Password: ") -> str:
    """A password from the terminal (asked twice) or the first line of stdin (scripts)."""
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(prompt)
        if getpass.getpass("Repeat password: ") != password:
            raise OpsDashError("the passwords do not match")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    from data.users import create_user

    account = create_user(
        _engine(), args.name, read_password(), role=args.role, municipality_id=args.municipality,
        ward_id=args.ward, email=args.email,
    )
    print(f"created user {account.username} ({account.role})")
    return 0


def cmd_user_password(args: argparse.Namespace) -> int:
    from data.users import set_password

    ended = set_password(_engine(), args.name, read_password())
    print(f"password of {args.name} changed; {ended} session(s) signed out")
    return 0


def cmd_user_active(args: argparse.Namespace) -> int:
    from data.users import set_active

    ended = set_active(_engine(), args.name, args.user_command == "enable")
    print(f"{args.name} {args.user_command}d; {ended} session(s) signed out")
    return 0


def cmd_user_sign_out(args: argparse.Namespace) -> int:
    """An administrator's "sign out everywhere": every open session of the user ends within a minute."""
    from data.users import find_account
    from data.web_sessions import revoke_user_sessions

    engine = _engine()
    if find_account(engine, username=args.name) is None:
        raise OpsDashError(f"no user named {args.name!r}")
    print(f"{revoke_user_sessions(engine, args.name)} session(s) of {args.name} signed out")
    return 0


def _demo_environment() -> list[dict]:
    """SQLite by default, schema migrated, seeded when empty. Returns the demo logins."""
    from sqlalchemy import func, select

    from data.models import Municipality
    from data.seed import seed

    from .settings import get_settings

    demo_file = opsdash_home() / "var" / "demo-logins.json"  # beside the default demo database
    engine = _engine()
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
    print(f"note: {get_settings().database_url} already has data; demo passwords are not known", flush=True)
    return []


def cmd_serve(args: argparse.Namespace) -> int:
    from . import settings as settings_module

    if args.demo:
        os.environ["OPSDASH_DEMO"] = "1"
        os.environ.setdefault("OPSDASH_COOKIE_SECRET", secrets.token_urlsafe(32))
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
        _engine()
        users = []
    from .panel_fence import sign_bokeh_sessions

    # The cookie secret stays in this process's environment (OPSDASH_COOKIE_SECRET, read by the
    # routes plugin): on a command line every local user could read it in the process list, and
    # a crash could print it.
    sign_bokeh_sessions()
    argv = panel_serve_argv(args.address, args.port, settings.allowed_origins)
    print(f"OpsDash on http://{'localhost' if args.address in ('0.0.0.0', '127.0.0.1') else args.address}:{args.port}/",
          flush=True)
    print_logins(users)
    from panel.command import main as panel_main

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
    ]
    for origin in sorted(allowed):
        argv += ["--allow-websocket-origin", origin]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opsdash", description="OpsDash: municipal operations dashboard")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init-db", help="create or upgrade the schema (idempotent)")
    p.set_defaults(handler=cmd_init_db)

    p = sub.add_parser(
        "seed", help="add realistic demo data and demo users",
        description="Add realistic demo data and demo users. On PostgreSQL, 100,000 tickets or more into an empty "
                    "tickets table (a fresh database) load about twice as fast: the search indexes are dropped and "
                    "built again afterwards, and the table is locked until the load commits. Into a table that "
                    "already has tickets the indexes are kept: slower, but dashboards using the database keep "
                    "working during the load.")
    p.add_argument("--tickets", type=int, default=3000)
    p.add_argument("--wards", type=int, default=8)
    p.add_argument("--municipalities", type=int, default=2)
    p.add_argument("--random-seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print ids, wards and demo logins as JSON")
    p.set_defaults(handler=cmd_seed)

    p = sub.add_parser("user", help="manage users")
    user_sub = p.add_subparsers(dest="user_command", required=True)
    p = user_sub.add_parser("add", help="create a user; the password is read from stdin")
    p.add_argument("name")
    # Checked by create_user, so a bad role gets the same one-line error as every other bad value.
    p.add_argument("--role", required=True, help="admin, manager, ward_councillor, field_worker or citizen")
    p.add_argument("--municipality", required=True, help="municipality id (uuid)")
    p.add_argument("--ward", default=None, help="ward id (required for ward_councillor)")
    p.add_argument("--email", default=None)
    p.set_defaults(handler=cmd_user_add)
    p = user_sub.add_parser("password", help="set a new password (read from stdin); signs the user out everywhere")
    p.add_argument("name")
    p.set_defaults(handler=cmd_user_password)
    for action in ("disable", "enable"):
        p = user_sub.add_parser(action, help=f"{action} an account" + (" and sign it out everywhere"
                                                                        if action == "disable" else ""))
        p.add_argument("name")
        p.set_defaults(handler=cmd_user_active)
    p = user_sub.add_parser("sign-out", help="sign the user out everywhere (every open dashboard closes within a minute)")
    p.add_argument("name")
    p.set_defaults(handler=cmd_user_sign_out)

    p = sub.add_parser("serve", help="serve the web dashboard")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--demo", action="store_true",
                   help="local demo: SQLite, seeded when empty, simulator running, logins printed")
    p.set_defaults(handler=cmd_serve)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


#: Functions that add further subcommands (live events, export) to the parser.
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []

from . import cli_live  # noqa: E402  (live events: publish, simulate)

EXTRA_COMMANDS.append(cli_live.register)

from . import cli_export  # noqa: E402  (opsdash export)

EXTRA_COMMANDS.append(cli_export.register)

from . import cli_categories  # noqa: E402  (opsdash category)

EXTRA_COMMANDS.append(cli_categories.register)

from . import cli_db  # noqa: E402  (opsdash db grant / revoke)

EXTRA_COMMANDS.append(cli_db.register)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except OpsDashError as exc:
        print(f"opsdash: error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # database down or refusing us: say so in one line
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        print(f"opsdash: error: the database cannot be used ({detail}); check OPSDASH_DATABASE_URL",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
