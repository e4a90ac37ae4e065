"""Helpers for the live-event tests (bus, hub and server tests share them)."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Awaitable, Callable, TypeVar

import redis

from data.events import InProcessBus, RedisBus, channel_for

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait on a condition (never a fixed sleep); fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Blocking variant of ``until`` for tests that drive other processes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def subscriber_connections(redis_url: str, name_prefix: str = "opsdash-hub") -> dict[str, int]:
    """Redis pub/sub connections per client name (one name per process) from CLIENT LIST."""
    client = redis.Redis.from_url(redis_url)
    try:
        counts: dict[str, int] = {}
        for entry in client.client_list(_type="pubsub"):
            name = entry.get("name", "")
            if name.startswith(name_prefix):
                counts[name] = counts.get(name, 0) + 1
        return counts
    finally:
        client.close()


def kill_subscribers(redis_url: str, client_name: str) -> int:
    """CLIENT KILL the pub/sub connections named ``client_name``: a lost connection, as the hub sees it."""
    client = redis.Redis.from_url(redis_url)
    try:
        killed = 0
        for entry in client.client_list(_type="pubsub"):
            if entry.get("name") == client_name:
                killed += int(client.execute_command("CLIENT", "KILL", "ID", entry["id"]))
        return killed
    finally:
        client.close()


def drop_connection(bus: InProcessBus | RedisBus) -> None:
    """Cut the hub's subscription the way each bus loses it in production."""
    if isinstance(bus, InProcessBus):
        bus.disconnect_all()
    else:
        assert kill_subscribers(bus.url, bus.client_name) >= 1, "no subscriber connection to kill"


def fresh_municipality() -> uuid.UUID:
    """A municipality id (hence a channel) no other test or engineer uses."""
    return uuid.uuid4()


def add_ticket(engine, municipality_id: uuid.UUID | str, ward_id: str | None, *, sensitive: bool = False,
               category: str = "water", response_deadline=None) -> dict:
    """Insert one ticket (as the ticketing system would) and return its id and tracking number."""
    from datetime import datetime, timezone

    from data.seed import insert_tickets

    now = datetime.now(timezone.utc)
    ticket_id = uuid.uuid4()
    tracking = f"T-{ticket_id.hex[:12]}"
    insert_tickets(engine, [(
        ticket_id, uuid.UUID(str(municipality_id)), ward_id, tracking, category, "open", "medium", "test",
        "1 Main Road", "en", sensitive, now, response_deadline, None, None, None, None, None, now,
    )])
    return {"id": ticket_id, "tracking_number": tracking}


def ticketing_message(kind: str, ward: str | None, tracking: str, *, ward_in_data: bool = False,
                      **data) -> dict:
    """The ticketing system's own shape: {"type", "data", "ward_id"} (municipality from the channel)."""
    body = {"tracking_number": tracking, "category": "water", "status": "open", **data}
    if ward_in_data:
        body["ward_id"] = ward
        return {"type": kind, "data": body}
    return {"type": kind, "data": body, "ward_id": ward}


__all__ = ["add_ticket", "channel_for", "drop_connection", "fresh_municipality", "kill_subscribers", "run",
           "subscriber_connections", "ticketing_message", "until", "wait_until"]
