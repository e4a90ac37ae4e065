"""The hub's replay buffer: where a reconnecting event stream resumes (``Last-Event-ID``, issue 18).

Every event the hub routes gets a position in this process, ``<epoch>-<n>``:
``epoch`` is random per hub, so a position from another process (a restart, a
different instance behind the load balancer) is never taken for one of ours.
For each municipality that has had an event stream in the last ``keep_s``
seconds the buffer keeps the last ``size`` routed events, with what the
routing decided (whether councillors may get the event at all).

A resume is answered only when the buffer knows everything the client can
have missed: the position is ours, not evicted, and no gap (a bus reconnect,
a failed ticket lookup) lies after it. Otherwise the stream says ``resync``
and the client reloads from the database: the database is the truth, events
are hints (docs/architecture.md).
"""
from __future__ import annotations

import collections
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: no import at run time
    from .events import Event
    from .scope import Scope

#: Events kept per municipality: at 50 events a second, 20 s of a disconnect.
DEFAULT_REPLAY_SIZE = 1000
#: How long a municipality's events are kept after its last event stream ended.
DEFAULT_KEEP_S = 600.0


@dataclass
class _Record:
    events: collections.deque = field(default_factory=collections.deque)  # (n, event, councillors)
    complete_after: int = 0  # every routed event after this position is in ``events``
    streams: int = 0
    idle_since: float | None = None


class ReplayBuffer:
    """Positions for routed events and, per watched municipality, the last ``size`` of them."""

    def __init__(self, size: int = DEFAULT_REPLAY_SIZE, keep_s: float = DEFAULT_KEEP_S) -> None:
        self.epoch = secrets.token_hex(4)
        self.size = size
        self.keep_s = keep_s
        self.last = 0
        self._records: dict[uuid.UUID, _Record] = {}

    def position(self, n: int | None = None) -> str:
        return f"{self.epoch}-{self.last if n is None else n}"

    def parse(self, position: str | None) -> int | None:
        """``n`` of one of this buffer's positions; None for anything else (another process, garbage)."""
        if not isinstance(position, str) or len(position) > 40:
            return None
        epoch, _, n = position.strip().partition("-")
        if epoch != self.epoch or not n.isdigit():
            return None
        value = int(n)
        return value if value <= self.last else None

    # ---------------------------------------------------------- streams of a municipality

    def watch(self, municipality_id: uuid.UUID) -> None:
        record = self._records.get(municipality_id)
        if record is None:
            record = self._records[municipality_id] = _Record(complete_after=self.last)
        record.streams += 1
        record.idle_since = None

    def unwatch(self, municipality_id: uuid.UUID) -> None:
        record = self._records.get(municipality_id)
        if record is not None:
            record.streams = max(record.streams - 1, 0)
            if record.streams == 0:
                record.idle_since = time.monotonic()

    def watched(self, municipality_id: uuid.UUID) -> bool:
        """Whether events of this municipality are kept (a stream is open, or closed less than keep_s ago)."""
        record = self._records.get(municipality_id)
        if record is None:
            return False
        if record.streams == 0 and record.idle_since is not None and time.monotonic() - record.idle_since > self.keep_s:
            del self._records[municipality_id]  # nobody came back: free its events
            return False
        return True

    # ----------------------------------------------------------------- the hub's side

    def record(self, event: Event, *, councillors: bool) -> int:
        """The next position, for ``event`` as routed (kept when its municipality is watched)."""
        self.last += 1
        record = self._records.get(event.municipality_id)
        if record is not None:
            if len(record.events) >= self.size:
                evicted = record.events.popleft()
                record.complete_after = max(record.complete_after, evicted[0])
            record.events.append((self.last, event, councillors))
        return self.last

    def gap(self, municipality_id: uuid.UUID | None = None) -> None:
        """Events may have been lost now (of one municipality, or of all): no resume from before here."""
        targets = self._records.values() if municipality_id is None else filter(None, [self._records.get(municipality_id)])
        for record in targets:
            record.complete_after = self.last

    def since(self, scope: Scope, position: str | None) -> list[tuple[int, Event]] | None:
        """What ``scope`` may see after ``position``, oldest first; None when that cannot be known (resync)."""
        after = self.parse(position)
        record = self._records.get(scope.municipality_id)
        if after is None or record is None or after < record.complete_after:
            return None
        return [(n, event) for n, event, councillors in record.events
                if n > after and (councillors or scope.sees_whole_municipality) and scope.allows_ward(event.ward_id)]

    def snapshot(self) -> dict[str, int]:
        return {"municipalities": len(self._records), "events": sum(len(r.events) for r in self._records.values()),
                "last": self.last}
