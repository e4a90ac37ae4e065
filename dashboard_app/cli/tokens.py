"""``opsdash token create | list | revoke``: personal API tokens for ``/api/v1/`` (docs/api.md)."""
from __future__ import annotations

import argparse
from datetime import datetime

from data.api_tokens import create_token, list_tokens, parse_expiry, revoke_token

from .shared import open_engine


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def cmd_token_create(args: argparse.Namespace) -> int:
    lifetime = parse_expiry(args.expires)  # before touching the database: a typo fails fast
    info, token = create_token(open_engine(), args.user, args.label, lifetime)
    expiry = f"expires {_when(info.expires_at)}" if info.expires_at else "never expires"
    print(f"created API token {info.id} for {info.username} ({info.label}, {expiry})")
    print("copy it now, it is not shown again:")
    print(token, flush=True)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    tokens = list_tokens(open_engine(), args.user)
    if not tokens:
        print("no API tokens")
        return 0
    print("id            user                  label                 state    created              "
          "expires              last used            from")
    for t in tokens:
        print(f"{t.id:<13} {t.username[:21]:<21} {t.label[:21]:<21} {t.state():<8} {_when(t.created_at):<20} "
              f"{_when(t.expires_at):<20} {_when(t.last_used_at):<20} {t.last_used_from or '-'}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    if revoke_token(open_engine(), args.id):
        print(f"API token {args.id} revoked")
    else:
        print(f"API token {args.id} was already revoked")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="personal API tokens for /api/v1/ (printed once, stored hashed)")
    token_sub = p.add_subparsers(dest="token_command", required=True)
    p = token_sub.add_parser("create", help="make a token that acts as a user; printed once")
    p.add_argument("--user", required=True, help="the user the token acts as (their scope, their role)")
    p.add_argument("--label", required=True, help="what it is for, e.g. power-bi")
    p.add_argument("--expires", default=None, help="lifetime: 90d (default), 12h, or never")
    p.set_defaults(handler=cmd_token_create)
    p = token_sub.add_parser("list", help="tokens with their state and last use (never the secret)")
    p.add_argument("--user", default=None, help="only this user's tokens")
    p.set_defaults(handler=cmd_token_list)
    p = token_sub.add_parser("revoke", help="revoke a token by its id (from `token list`); refused at once")
    p.add_argument("id")
    p.set_defaults(handler=cmd_token_revoke)
