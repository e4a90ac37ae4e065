"""The database itself: ``opsdash init-db``, ``opsdash seed``, ``opsdash db grant | revoke``.

``db grant`` / ``db revoke`` manage analysts' own PostgreSQL logins
(data.db_roles). The role reads only what the user's Scope allows because
PostgreSQL's row-level security says so (migration 0007), not because of
anything in this process.
"""
from __future__ import annotations

import argparse

from data.db import schema_revision

from .shared import open_engine, print_logins, read_password

# data.seed and data.db_roles are imported by their handlers (`# import cost:`): each adds ~0.35 s (argon2 through
# data.users) to every `opsdash` start, `opsdash --help` included (python -X importtime).


def cmd_init_db(args: argparse.Namespace) -> int:
    engine = open_engine()
    print(f"database ready at revision {schema_revision(engine)}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from data.seed import seed  # import cost: ~0.35 s, see above

    engine = open_engine()
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


def cmd_db_grant(args: argparse.Namespace) -> int:
    from data.db_roles import grant_database_role, render  # import cost: ~0.35 s, see above

    engine = open_engine()  # on SQLite data.db_roles refuses: one line, exit 2
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
    from data.db_roles import render, revoke_database_role  # import cost: ~0.35 s, see above

    engine = open_engine()  # on SQLite data.db_roles refuses: one line, exit 2
    plans = revoke_database_role(engine, args.username, args.role, execute=not args.print_sql)
    if args.print_sql:
        print("\n".join(render(engine, plans)))
        return 0
    if not plans:
        print(f"no database role is mapped to {args.username}: nothing to revoke")
    for plan in plans:
        print(f"{plan.action} database role {plan.role_name} (was mapped to {args.username})")
    return 0


def register_setup(sub: argparse._SubParsersAction) -> None:
    """``init-db`` and ``seed``: the first two commands of ``opsdash --help``."""
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


def register_roles(sub: argparse._SubParsersAction) -> None:
    """``db grant`` / ``db revoke``."""
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
