"""``opsdash publish`` and ``opsdash simulate``: the live-event subcommands.

Both need ``OPSDASH_REDIS_URL`` to
reach running servers: the in-process bus lives inside one server process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Awaitable, TypeVar

from data.errors import ConfigError, InvalidValue
from data.events import EVENT_TYPES, bus_for, channel_for, publish_event

from ..settings import get_settings
from .shared import open_engine

T = TypeVar("T")


def _redis_url(required: bool) -> str | None:
    url = get_settings().redis_url
    if url is None and required:
        raise ConfigError(
            "OPSDASH_REDIS_URL is not set: events published from this command could reach no server "
            "(set it to the Redis the servers use, e.g. redis://127.0.0.1:6379/0)"
        )
    return url


def _message_from_args(args: argparse.Namespace) -> dict:
    if args.message is not None:
        try:
            message = json.loads(args.message)
        except ValueError:
            raise InvalidValue("--message is not valid JSON") from None
        if not isinstance(message, dict):
            raise InvalidValue("--message must be a JSON object")
        return message
    if not args.type:
        raise InvalidValue(f"give --type ({', '.join(sorted(EVENT_TYPES))}) or a whole --message")
    try:
        data = json.loads(args.data) if args.data else {}
    except ValueError:
        raise InvalidValue("--data is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidValue("--data must be a JSON object")
    return {"type": args.type, "municipality_id": args.municipality, "ward_id": args.ward,
            "ticket_id": args.ticket, "data": data}


def _run_then_close(bus, work: Awaitable[T]) -> T:
    """Run ``work`` in a fresh event loop and close the bus's connections there, whatever happens."""

    async def main() -> T:
        try:
            return await work
        finally:
            await bus.close()

    return asyncio.run(main())


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        channel = channel_for(args.municipality)
    except ValueError:
        raise InvalidValue(f"--municipality must be a municipality id (uuid), got {args.municipality!r}") from None
    message = _message_from_args(args)
    bus = bus_for(_redis_url(required=True))

    # The engine lets the publisher refuse an event whose ticket is sensitive in the database.
    receivers = _run_then_close(bus, publish_event(bus, message, engine=open_engine(migrate=False), channel=channel))
    print(f"published {message.get('type')} to {channel} ({receivers} subscriber connection(s))")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    # import cost: ~0.36 s (argon2 and the seed's word lists) on every other `opsdash` start otherwise.
    from data.simulator import Simulator

    url = _redis_url(required=False)
    if url is None:
        print("note: OPSDASH_REDIS_URL is not set; the database changes, but no server hears the events "
              "(`opsdash serve --demo` runs the simulator in-process instead)", file=sys.stderr)
    bus = bus_for(url)
    simulator = Simulator(open_engine(), bus, municipality_ids=args.municipality or None, random_seed=args.random_seed)

    published = _run_then_close(bus, simulator.run(args.rate, args.duration))
    print(f"published {published} events; {simulator.refused} sensitive changes were not announced")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="publish one live event (needs OPSDASH_REDIS_URL)")
    p.add_argument("--municipality", required=True, help="municipality id (uuid): the channel dashboard:{id}")
    p.add_argument("--type", choices=sorted(EVENT_TYPES))
    p.add_argument("--ward", default=None)
    p.add_argument("--ticket", default=None, help="ticket id (uuid); refused when the ticket is sensitive")
    p.add_argument("--data", default=None, help='JSON object, e.g. \'{"tracking_number": "ETH-1", "status": "open"}\'')
    p.add_argument("--message", default=None,
                   help="a whole message as JSON instead of the options (e.g. the ticketing system's shape)")
    p.set_defaults(handler=cmd_publish)

    p = sub.add_parser("simulate", help="realistic ticket activity: updates the database and publishes events")
    p.add_argument("--rate", type=float, default=2.0, help="changes per second (default 2)")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--municipality", action="append", default=[], help="limit to this municipality id (repeatable)")
    p.add_argument("--random-seed", type=int, default=None)
    p.set_defaults(handler=cmd_simulate)
