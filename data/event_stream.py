"""Server-Sent Events of the live hub, for ``GET /api/v1/dashboard/events`` (docs/api.md, issue 18).

The plan's contract, kept exactly: first an event ``connected`` with
``{"status": "connected", "municipality_id": "<id>"}``; then one SSE event per
live event: ``event:`` its type, ``data:`` its ``data`` object as JSON, ``id:``
its position in this process (``data.replay``). Beyond the contract:

- ``resync`` (data ``{"reason": ...}``): events were missed (a ``Last-Event-ID``
  the replay buffer cannot answer, a client too slow for its bounded queue, a
  bus reconnect): reload from the database (the export or the dashboard), then
  carry on with the stream;
- a comment line (``: heartbeat``) every ``heartbeat_s`` when nothing else was
  sent, so proxies keep the connection and clients can tell a quiet stream
  from a dead one;
- ``retry:`` once at the start: how long a browser waits before reconnecting.

An ``EventStream`` is one client: a ``StreamFeed`` of the process's hub (never
a bus connection of its own), registered and unregistered with the stream.
Plain Python: the Tornado handler (``dashboard_app/api_routes.py``) writes what
it returns.
"""
from __future__ import annotations

import asyncio
import json
from typing import Iterable

from .events import Event
from .hub import Hub
from .replay import ReplayBuffer
from .scope import Scope

#: Events a slow client may have waiting before it is told to resync instead (references to shared events).
STREAM_QUEUE_SIZE = 500
#: What a browser's EventSource waits before reconnecting, in milliseconds.
RETRY_MS = 3000


def sse_frame(event: str, data: object, event_id: str | None = None) -> bytes:
    """One SSE event. ``data`` as compact JSON (one line: JSON escapes line breaks in strings)."""
    lines = [f"event: {event}", f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False, default=str)}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


HEARTBEAT = b": heartbeat\n\n"


class _FrameCache:
    """Each routed event's frame, made once for all the streams it goes to (bounded, newest kept)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._frames: dict[tuple[str, int], bytes] = {}

    def get(self, replay: ReplayBuffer, n: int, event: Event) -> bytes:
        key = (replay.epoch, n)
        frame = self._frames.get(key)
        if frame is None:
            frame = sse_frame(event.type, dict(event.data), replay.position(n))
            if len(self._frames) >= self.size:
                del self._frames[next(iter(self._frames))]  # dicts keep insertion order: the oldest
            self._frames[key] = frame
        return frame


_frames = _FrameCache()


class EventStream:
    """One client's stream. ``open`` first (on the hub's loop), then ``next`` until done, ``close`` at the end."""

    def __init__(self, hub: Hub, scope: Scope, last_event_id: str | None = None,
                 queue_size: int = STREAM_QUEUE_SIZE) -> None:
        self.hub, self.scope = hub, scope
        self.last_event_id = (last_event_id or "").strip() or None
        self.queue_size = queue_size
        self.feed = None
        self.sent = 0
        self.resyncs = 0

    def open(self) -> bytes:
        """Register with the hub; the first bytes: ``retry``, ``connected``, then what was missed (or ``resync``)."""
        self.feed, missed = self.hub.open_stream(self.scope, self.last_event_id, queue_size=self.queue_size)
        replay = self.hub.replay
        resumed = missed is not None and self.last_event_id is not None
        head = f"retry: {RETRY_MS}\n\n".encode() + sse_frame(
            "connected", {"status": "connected", "municipality_id": str(self.scope.municipality_id)},
            self.last_event_id if resumed else replay.position())
        if missed is None:
            return head + self._resync("unknown_position")
        return head + self._events(missed)

    def _events(self, items: Iterable[tuple[int, Event]]) -> bytes:
        frames = [_frames.get(self.hub.replay, n, event) for n, event in items]
        self.sent += len(frames)
        return b"".join(frames)

    def _resync(self, reason: str) -> bytes:
        self.resyncs += 1
        return sse_frame("resync", {"reason": reason}, self.hub.replay.position())

    async def next(self, heartbeat_s: float) -> bytes:
        """What to send next: queued events (or ``resync``), else a heartbeat after ``heartbeat_s``."""
        feed = self.feed
        if feed is None:
            raise RuntimeError("open the stream first")
        if not feed.ready.is_set():
            # A timer rather than asyncio.wait_for, which wraps every wait in a task of its own.
            beat = asyncio.get_running_loop().call_later(heartbeat_s, feed.ready.set)
            try:
                await feed.ready.wait()
            finally:
                beat.cancel()
        items, resync = feed.take()
        if resync:
            # Some were dropped: the client reloads from the database, which the queued ones precede.
            return self._resync("missed_events")
        if items:
            return self._events(items)
        return HEARTBEAT if self.feed is not None else b""

    def close(self) -> None:
        """Unregister at once (idempotent): a disconnected client leaves nothing in the hub."""
        feed, self.feed = self.feed, None
        if feed is not None:
            self.hub.unregister(feed)
            feed.ready.set()  # a writer waiting in ``next`` returns now
