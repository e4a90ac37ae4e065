"""``opsdash export``: the same export the download buttons make, audited (channel ``cli``).

The Scope comes from the named
user's database record, exactly as for a signed-in session.
"""
from __future__ import annotations

import argparse
import sys

from data.audit import pending_count, write_pending
from data.export import check_format, export_tickets
from data.filters import TicketFilters
from data.scope import scope_for_user

from ..settings import get_read_route
from .shared import open_engine

#: CLI option -> TicketFilters.parse key.
FILTER_OPTIONS = {"status": "status", "category": "category", "ward": "ward", "created_from": "from",
                  "created_to": "to", "search": "search"}

#: How long ``opsdash export`` waits for the database to take a failed export's audit row before it exits.
PENDING_AUDIT_WAIT_S = 15.0


def filters_from_args(args: argparse.Namespace) -> TicketFilters:
    values = {}
    for option, key in FILTER_OPTIONS.items():
        value = getattr(args, option)
        if isinstance(value, list):  # repeatable options, each possibly comma separated
            value = ",".join(value)
        if value:
            values[key] = value
    return TicketFilters.parse(values)


def cmd_export(args: argparse.Namespace) -> int:
    fmt = check_format(args.format)  # before touching the database: a typo fails fast
    filters = filters_from_args(args)
    engine = open_engine()
    scope = scope_for_user(engine, args.user)

    def progress(done: int, total: int) -> None:
        if args.progress and total:
            print(f"\r{done:,} / {total:,} rows", end="", file=sys.stderr, flush=True)

    try:
        result = export_tickets(engine, scope, filters, fmt, args.output, channel="cli", progress=progress,
                               reads=get_read_route())
    except Exception:
        # The failure's audit row waits when the database is what failed: give it a moment to return.
        if pending_count():
            write_pending(within_s=PENDING_AUDIT_WAIT_S)
        if pending_count():
            print("opsdash: the failed export could not be written to the audit table (the database did not "
                  "answer); the log line above records it", file=sys.stderr)
        raise
    if args.progress:
        print(file=sys.stderr)
    sheets = f" on {result.sheets} sheets" if result.sheets > 1 else ""
    print(f"wrote {result.row_count} tickets{sheets} to {result.path} in {result.duration_ms / 1000:.1f} s "
          f"(audited as {scope.username}: {result.filters.describe()})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the tickets a user may see as CSV or Excel (audited)")
    p.add_argument("--user", required=True, help="whose scope to export (a username)")
    p.add_argument("--format", required=True, help="csv or xlsx")
    p.add_argument("--output", required=True, help="file to write (replaced only when the export succeeds)")
    p.add_argument("--status", action="append", default=[], help="open, in_progress, ... (repeatable or comma separated)")
    p.add_argument("--category", action="append", default=[], help="water, electricity, ... (repeatable)")
    p.add_argument("--ward", action="append", default=[], help="ward id (repeatable; ignored for a councillor)")
    p.add_argument("--from", dest="created_from", default=None, help="created on or after this local date (YYYY-MM-DD)")
    p.add_argument("--to", dest="created_to", default=None, help="created on or before this local date (YYYY-MM-DD)")
    p.add_argument("--search", default=None, help="text in tracking number, description or address")
    p.add_argument("--progress", action="store_true", help="show rows written on stderr")
    p.set_defaults(handler=cmd_export)
