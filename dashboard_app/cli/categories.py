"""``opsdash category``: the known categories (every other category is hidden: data.sensitivity).

``list --user ADMIN`` also says how
many of that admin's municipality's tickets are hidden for an unknown
category, and how it is spelled (never a ticket's content).
"""
from __future__ import annotations

import argparse

from data.categories import add_known_category, hidden_categories, known_categories
from data.scope import scope_for_user

from .shared import open_engine


def cmd_category_list(args: argparse.Namespace) -> int:
    engine = open_engine()
    print("known categories: " + ", ".join(sorted(known_categories(engine))))
    if args.user:
        hidden = hidden_categories(engine, scope_for_user(engine, args.user))
        print(f"hidden for an unknown category: {hidden.tickets} tickets")
        for spelling, count in hidden.spellings:
            print(f"  {count:>8}  {spelling}")
    return 0


def cmd_category_add(args: argparse.Namespace) -> int:
    key = add_known_category(open_engine(), args.name, added_by=args.by)
    print(f"known category: {key} (its tickets are shown from now on, scoped as every ticket is)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("category", help="list or add the known ticket categories (others stay hidden)")
    category_sub = p.add_subparsers(dest="category_command", required=True)
    p = category_sub.add_parser("list", help="the known categories; with --user ADMIN, what is hidden")
    p.add_argument("--user", default=None, help="an admin: also count that municipality's hidden tickets")
    p.set_defaults(handler=cmd_category_list)
    p = category_sub.add_parser("add", help="make a category known, so its tickets show")
    p.add_argument("name", help="the category as the ticketing system writes it (e.g. fire)")
    p.add_argument("--by", default=None, help="who decided it (recorded)")
    p.set_defaults(handler=cmd_category_add)
