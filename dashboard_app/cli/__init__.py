"""The ``opsdash`` command line.

One module per command group (``db``, ``users``, ``serve``, ``live``,
``export``, ``tokens``, ``categories``), each with a ``register`` that adds its
subcommands; ``shared`` holds what they have in common. Each subcommand is a
small function taking the parsed arguments and returning an exit code;
errors OpsDash raises on purpose print as one line (``opsdash: error:
...``) with exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from sqlalchemy.exc import SQLAlchemyError

from data.errors import OpsDashError

from . import categories, db, export, live, serve, tokens, users
from .serve import CHECK_UNUSED_SESSIONS_MS, UNUSED_SESSION_LIFETIME_MS, panel_serve_argv

__all__ = ["CHECK_UNUSED_SESSIONS_MS", "UNUSED_SESSION_LIFETIME_MS", "build_parser", "main", "panel_serve_argv"]

#: The command groups in the order ``opsdash --help`` lists them.
COMMAND_GROUPS = (db.register_setup, users.register, serve.register, live.register, export.register,
                  tokens.register, categories.register, db.register_roles)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opsdash", description="OpsDash: municipal operations dashboard")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMAND_GROUPS:
        register(sub)
    return parser


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
