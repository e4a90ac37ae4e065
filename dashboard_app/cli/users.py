"""``opsdash user add | password | disable | enable | sign-out``: OpsDash's own accounts."""
from __future__ import annotations

import argparse

from data.errors import OpsDashError
from data.web_sessions import revoke_user_sessions

from .shared import open_engine, read_password

# data.users is imported by each handler (`# import cost:`): with argon2 it adds ~0.2 s to every
# `opsdash` start, `opsdash --help` included (python -X importtime, after what the CLI imports anyway).


def cmd_user_add(args: argparse.Namespace) -> int:
    from data.users import create_user  # import cost: ~0.2 s (argon2), see above

    account = create_user(
        open_engine(), args.name, read_password(), role=args.role, municipality_id=args.municipality,
        ward_id=args.ward, email=args.email,
    )
    print(f"created user {account.username} ({account.role})")
    return 0


def cmd_user_password(args: argparse.Namespace) -> int:
    from data.users import set_password  # import cost: ~0.2 s (argon2), see above

    ended = set_password(open_engine(), args.name, read_password())
    print(f"password of {args.name} changed; {ended} session(s) signed out")
    return 0


def cmd_user_active(args: argparse.Namespace) -> int:
    from data.users import set_active  # import cost: ~0.2 s (argon2), see above

    ended = set_active(open_engine(), args.name, args.user_command == "enable")
    print(f"{args.name} {args.user_command}d; {ended} session(s) signed out")
    return 0


def cmd_user_sign_out(args: argparse.Namespace) -> int:
    """An administrator's "sign out everywhere": every open session of the user ends within a minute."""
    from data.users import find_account  # import cost: ~0.2 s (argon2), see above

    engine = open_engine()
    if find_account(engine, username=args.name) is None:
        raise OpsDashError(f"no user named {args.name!r}")
    print(f"{revoke_user_sessions(engine, args.name)} session(s) of {args.name} signed out")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
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
