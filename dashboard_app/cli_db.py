"""``opsdash db grant`` / ``opsdash db revoke``: analysts' own PostgreSQL logins (data.db_roles).

Registered through ``cli.EXTRA_COMMANDS``. The role reads only what the
user's Scope allows because PostgreSQL's row-level security says so
(migration 0007), not because of anything in this process.
"""
from __future__ import annotations

import argparse


def cmd_db_grant(args: argparse.Namespace) -> int:
    from data.db_roles import grant_database_role, render

    from .cli import _engine, read_password

    engine = _engine()  # on SQLite data.db_roles refuses: one line, exit 2
    if args.print_sql:
        plan = grant_database_role(engine, args.username, args.role, execute=False)
        print("\n".join(render(engine, [plan])))
        return 0
    # Empty: a new role gets no password (trust/peer/cert sign-in only), an existing one keeps its own.
    password = read_password("Password for the database role (empty: none / unchanged): ")
    plan = grant_database_role(engine, args.username, args.role, password or None)
    print(f"{plan.action} database role {plan.role_name} for {args.username}: it reads only the tickets "
          f"{args.username} may see")
    for note in plan.notes:
        print(f"note: {note}")
    return 0


def cmd_db_revoke(args: argparse.Namespace) -> int:
    from data.db_roles import render, revoke_database_role

    from .cli import _engine

    engine = _engine()  # on SQLite data.db_roles refuses: one line, exit 2
    plans = revoke_database_role(engine, args.username, args.role, execute=not args.print_sql)
    if args.print_sql:
        print("\n".join(render(engine, plans)))
        return 0
    if not plans:
        print(f"no database role is mapped to {args.username}: nothing to revoke")
    for plan in plans:
        print(f"{plan.action} database role {plan.role_name} (was mapped to {args.username})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="PostgreSQL login roles that see only one user's tickets (row-level security)")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    p = db_sub.add_parser(
        "grant", help="create or update a login role mapped to USERNAME; its password is read from stdin",
        description="Create or update a PostgreSQL LOGIN role that reads only the tickets USERNAME may see. "
                    "The password is read from stdin (asked twice on a terminal); empty gives a new role no "
                    "password (sign-in only where pg_hba.conf trusts it) and keeps an existing role's.")
    p.add_argument("username", help="the OpsDash user whose scope the role gets")
    p.add_argument("--role", default=None, help="role name (default: opsdash_<username>, sanitised)")
    p.add_argument("--print-sql", action="store_true",
                   help="print the SQL for a DBA instead of running it (no password is read)")
    p.set_defaults(handler=cmd_db_grant)
    p = db_sub.add_parser("revoke", help="unmap USERNAME's database roles and drop them (NOLOGIN if they cannot be)")
    p.add_argument("username")
    p.add_argument("--role", default=None, help="only this role (default: every role mapped to USERNAME)")
    p.add_argument("--print-sql", action="store_true", help="print the SQL for a DBA instead of running it")
    p.set_defaults(handler=cmd_db_revoke)
