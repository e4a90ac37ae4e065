"""The per-process hub: one bus subscription, fanned out to every session in memory.

A browser session never owns a bus connection. The hub subscribes once
(pattern ``dashboard:*``, so the count stays one whatever the number of
municipalities), validates each message, drops malformed and sensitive ones
(invariant 1, including a database lookup of the ticket), and routes the rest
to the registered sessions whose Scope allows the event's ward. Each session
has a bounded queue: when it falls behind, its oldest events go and it is
marked for resync (its next drain reloads from the database).

When the bus connection is lost the hub reports ``paused``, reconnects with
capped exponential backoff and jitter, and marks every session for resync
once live again, since events published during the gap are gone. When the
database cannot resolve a batch's tickets (down, restarting, slow), the
events naming a ticket are dropped and their municipality's sessions marked
for resync: the database decides what they show once it answers.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy import Engine

from .events import (
    CHANNEL_PATTERN,
    SENSITIVE_REASONS,
    BusUnavailable,
    DropReason,
    Event,
    EventBus,
    EventRejected,
    Message,
    municipality_from_channel,
    parse_event,
)
from .named_tickets import TicketLookup, lookup_named_tickets
from .replay import DEFAULT_REPLAY_SIZE, ReplayBuffer
from .scope import Scope
from .sensitivity import is_known_key
from .workers import SHORT

log = logging.getLogger("opsdash.hub")

HubStatus = Literal["stopped", "connecting", "live", "paused"]
#: Longest pause between two reconnect attempts: live again within 5-10 s of Redis answering (a
#: restart takes seconds). A hundred processes retrying that often cost Redis nothing.
MAX_RECONNECT_DELAY_S = 10.0
DEFAULT_QUEUE_SIZE = 2000  # references to shared Event objects: cheap, and 4 s of 500 events/s
#: Event streams are woken at most this often: what reaches one within it goes out in one write. A wake
#: per event per client cost 62 us of CPU per delivered event at 1,000 clients and 50 events/s
#: (docs/performance.md, bench_sse.py); the p95 budget of a delivery is 250 ms.
DEFAULT_STREAM_TICK_S = 0.1


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): capped exponential, half jittered.

    Half of the delay is random so that many processes losing the same Redis
    do not all reconnect in the same instant.
    """
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Delivery:
    """Where an event goes: ``event`` carries the ward the database holds; ``narrowed`` (a drop
    reason) when it may reach whole-municipality sessions only."""

    event: Event
    narrowed: DropReason | None = None


def route(event: Event, lookup: TicketLookup | None) -> Delivery | DropReason:
    """Decide an event's delivery from the database's word (docs/architecture.md, invariant 1).

    What the event says about its category or ward can only narrow delivery: an
    unknown category drops it, a ward other than the ticket's keeps it from
    councillors. What it names decides the rest: the ticket's own municipality,
    ward and sensitivity. An event that names no ticket the database has (yet)
    reaches no councillor; the dashboard's next refresh shows the ticket once it lands.
    """
    if lookup is None:  # the database could not be asked: nothing it would decide goes out
        checkable = event.ticket_id is None and event.tracking_key is None and event.category_key is None
        return Delivery(event, narrowed=DropReason.UNRESOLVED_TICKET) if checkable else DropReason.LOOKUP_FAILED
    if event.category_key is not None and not is_known_key(event.category_key, lookup.known_categories):
        return DropReason.UNKNOWN_CATEGORY
    ticket = lookup.resolve(event.ticket_id, event.tracking_key)
    if ticket == "conflict":
        return DropReason.CONFLICTING_NAMES
    if ticket is None:
        return Delivery(event, narrowed=DropReason.UNRESOLVED_TICKET)
    if ticket.municipality_id != event.municipality_id:
        return DropReason.WRONG_MUNICIPALITY
    if not ticket.visible:
        return DropReason.SENSITIVE_TICKET
    truth = replace(event, ward_id=ticket.ward_id, ticket_id=ticket.id)
    if event.ward_id is not None and event.ward_id != ticket.ward_id:
        return Delivery(truth, narrowed=DropReason.WARD_MISMATCH)
    return Delivery(truth)


def _group_of(scope: Scope) -> tuple[bool, str | None]:
    """Scopes of one municipality with the same group see exactly the same events."""
    return (scope.sees_whole_municipality, scope.ward_id)


@dataclass(frozen=True)
class Drained:
    """What one drain of a session queue returns."""

    events: list[Event]
    resync: bool
    status: HubStatus


class SessionFeed:
    """One session's registration: its Scope and a bounded queue (drop-oldest)."""

    def __init__(self, hub: Hub, scope: Scope, maxlen: int) -> None:
        self.hub = hub
        self.scope = scope
        self.key = uuid.uuid4().hex
        self._queue: collections.deque[Event] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._resync = False
        self.overflowed = 0

    def offer(self, event: Event, position: int = 0) -> None:
        """Queue ``event`` (``position``: its place in the hub's replay buffer; streams send it as the id)."""
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                # deque(maxlen) drops the oldest on append; the session will
                # have missed it, so it must reload from the database.
                self.overflowed += 1
                self._resync = True
            self._queue.append(event)

    def mark_resync(self) -> None:
        with self._lock:
            self._resync = True

    def drain(self, max_items: int | None = None) -> Drained:
        """Oldest first, at most ``max_items``; the resync flag is read and cleared."""
        with self._lock:
            count = len(self._queue) if max_items is None else min(max_items, len(self._queue))
            events = [self._queue.popleft() for _ in range(count)]
            resync, self._resync = self._resync, False
        return Drained(events=events, resync=resync, status=self.hub.status)

    def __len__(self) -> int:
        return len(self._queue)


class StreamFeed(SessionFeed):
    """An event stream's registration (``/api/v1/dashboard/events``): queues (position, event) and wakes its
    writer at the hub's next stream tick (``Hub.wake_later``) instead of waiting to be polled. Made and fed
    on the hub's event loop."""

    def __init__(self, hub: Hub, scope: Scope, maxlen: int) -> None:
        super().__init__(hub, scope, maxlen)
        self.ready = asyncio.Event()

    def offer(self, event: Event, position: int = 0) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.overflowed += 1
            self._resync = True  # the oldest goes: the client must reload (a ``resync`` event)
        self._queue.append((position, event))  # type: ignore[arg-type]
        self.hub.wake_later(self)

    def mark_resync(self) -> None:
        super().mark_resync()
        self.ready.set()

    def take(self) -> tuple[list[tuple[int, Event]], bool]:
        """Everything queued, oldest first, and whether events were missed (the flag is cleared)."""
        self.ready.clear()
        items = list(self._queue)
        self._queue.clear()
        resync, self._resync = self._resync, False
        return items, resync  # type: ignore[return-value]


class Hub:
    """Process-wide subscriber and router. Start it once per process (``start``)."""

    def __init__(
        self, bus: EventBus, *, engine: Engine | None, queue_size: int = DEFAULT_QUEUE_SIZE,
        replay_size: int = DEFAULT_REPLAY_SIZE, base_delay: float = 0.5, max_delay: float = MAX_RECONNECT_DELAY_S,
        rng: random.Random | None = None, stream_tick_s: float = DEFAULT_STREAM_TICK_S,
    ) -> None:
        """``engine`` answers "is this ticket sensitive in the database?"; None skips that
        lookup and is meant only for tests and benchmarks of the bus itself. ``stream_tick_s``: see
        ``wake_later`` (0: wake event streams at once)."""
        self.bus = bus
        self.stream_tick_s = stream_tick_s
        self._waking: set[StreamFeed] = set()
        self._wake_handle: asyncio.TimerHandle | None = None
        self.engine = engine
        self.queue_size = queue_size
        # Positions of routed events, and the last ones of municipalities with event streams (Last-Event-ID).
        self.replay = ReplayBuffer(replay_size)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._rng = rng or random.Random()
        # municipality -> visibility group -> session key -> feed. Sessions whose Scopes
        # see the same events share a group, so routing asks allows_ward once per group.
        self._sessions: dict[uuid.UUID, dict[tuple[bool, str | None], dict[str, SessionFeed]]] = {}
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._status: HubStatus = "stopped"
        self._status_changed: asyncio.Event | None = None
        self.counters: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_error = ""
        self.connected_at: float | None = None
        # Change marks (see change_mark): events seen per municipality, and connections made.
        self._changes: collections.Counter[uuid.UUID] = collections.Counter()
        self._connections = 0

    # ------------------------------------------------------------ sessions

    def register(self, scope: Scope, *, queue_size: int | None = None) -> SessionFeed:
        if not isinstance(scope, Scope):
            raise TypeError("a Scope is required to receive live events")
        feed = SessionFeed(self, scope, queue_size or self.queue_size)
        with self._lock:
            groups = self._sessions.setdefault(scope.municipality_id, {})
            groups.setdefault(_group_of(scope), {})[feed.key] = feed
        return feed

    def open_stream(self, scope: Scope, last_event_id: str | None = None, *,
                    queue_size: int | None = None) -> tuple[StreamFeed, list[tuple[int, Event]] | None]:
        """Register an event stream; with the events ``scope`` missed since ``last_event_id`` (None: unknown,
        the client must resync). One step on the event loop, so no event falls between the two."""
        if not isinstance(scope, Scope):
            raise TypeError("a Scope is required to receive live events")
        feed = StreamFeed(self, scope, queue_size or self.queue_size)
        missed = self.replay.since(scope, last_event_id) if last_event_id else []
        self.replay.watch(scope.municipality_id)
        with self._lock:
            groups = self._sessions.setdefault(scope.municipality_id, {})
            groups.setdefault(_group_of(scope), {})[feed.key] = feed
        return feed, missed

    def wake_later(self, feed: StreamFeed) -> None:
        """Wake ``feed``'s writer at the next stream tick: one timer for all streams, and one write per
        stream and tick however many events it got meanwhile. On the hub's event loop."""
        if self.stream_tick_s <= 0:
            feed.ready.set()
            return
        self._waking.add(feed)
        if self._wake_handle is None:
            self._wake_handle = asyncio.get_running_loop().call_later(self.stream_tick_s, self._wake_streams)

    def _wake_streams(self) -> None:
        self._wake_handle = None
        feeds, self._waking = self._waking, set()
        for feed in feeds:
            feed.ready.set()

    def unregister(self, feed: SessionFeed) -> None:
        """Idempotent: a session may be torn down by more than one path."""
        with self._lock:
            groups = self._sessions.get(feed.scope.municipality_id)
            registered = groups is not None and feed.key in groups.get(_group_of(feed.scope), {})
            if isinstance(feed, StreamFeed) and registered:
                self.replay.unwatch(feed.scope.municipality_id)
                self._waking.discard(feed)
            if groups is None:
                return
            group = groups.get(_group_of(feed.scope))
            if group is not None:
                group.pop(feed.key, None)
                if not group:
                    del groups[_group_of(feed.scope)]
            if not groups:
                del self._sessions[feed.scope.municipality_id]

    def _all_feeds(self) -> list[SessionFeed]:
        with self._lock:
            return [f for groups in self._sessions.values() for group in groups.values() for f in group.values()]

    @property
    def session_count(self) -> int:
        return len(self._all_feeds())

    def _audience(self, municipality_id: uuid.UUID, ward_id: str | None, *, councillors: bool) -> list[SessionFeed]:
        audience: list[SessionFeed] = []
        with self._lock:
            for (whole_municipality, _), group in self._sessions.get(municipality_id, {}).items():
                feeds = list(group.values())
                if not whole_municipality and not councillors:
                    continue
                # Scope.allows_ward fails closed: no ward never reaches a councillor.
                # Every Scope of a group (same role class, same ward) answers alike.
                if feeds and feeds[0].scope.allows_ward(ward_id):
                    audience.extend(feeds)
        return audience

    def change_mark(self, municipality_id: uuid.UUID | str) -> tuple[int, int] | None:
        """A token that moves whenever the municipality's tickets may have changed; None when unknown.

        It counts every message on the municipality's channel this process has
        seen (dropped or not: an event that makes a ticket sensitive changes
        what may be shown) and every (re)connection, since messages published
        while disconnected are lost.
        None unless the hub is live. Result caches use it to keep results
        while nothing changed (components.query_cache); it says nothing about
        what changed, so it leaks nothing.
        """
        if self._status != "live":
            return None
        try:
            key = municipality_id if isinstance(municipality_id, uuid.UUID) else uuid.UUID(str(municipality_id))
        except ValueError:
            return None
        return (self._connections, self._changes[key])

    # -------------------------------------------------------------- status

    @property
    def status(self) -> HubStatus:
        return self._status

    def _set_status(self, status: HubStatus) -> None:
        if status == self._status:
            return
        previous, self._status = self._status, status
        log.info("live hub %s -> %s", previous, status)
        if status == "live":
            self._connections += 1
        if status == "live" and previous == "paused":
            # Whatever was published while we were away is lost: every session reloads.
            self.replay.gap()
            sessions = self._all_feeds()
            for feed in sessions:
                feed.mark_resync()
            self.counters["resyncs_after_reconnect"] += len(sessions)
        if self._status_changed is not None:
            self._status_changed.set()
            self._status_changed = asyncio.Event()

    async def wait_for_status(self, status: HubStatus, timeout: float) -> bool:
        """Wait until the hub reaches ``status`` (tests, start-up); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._status != status:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            waiter = self._status_changed
            if waiter is None:
                await asyncio.sleep(min(0.05, remaining))
                continue
            try:
                await asyncio.wait_for(waiter.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    def snapshot(self) -> dict[str, Any]:
        """Counters an operator can read (``/health``)."""
        return {
            "status": self._status,
            "bus": getattr(self.bus, "name", type(self.bus).__name__),
            "node": getattr(self.bus, "node", ""),  # the Redis server (cluster node, Sentinel's master) subscribed at
            "sessions": self.session_count,
            "replay": self.replay.snapshot(),
            "counters": dict(self.counters),
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------- routing

    def _drop(self, reason: DropReason | str, channel: str) -> None:
        key = reason.value if isinstance(reason, DropReason) else reason
        self.dropped[key] += 1
        n = self.dropped[key]
        if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: a flood cannot flood the log
            # Reason and channel only: a sensitive message's content never reaches a log line.
            log.warning("dropped live message (%s) on %s; %d so far for this reason", key, channel[:80], n)

    async def handle_message(self, channel: str, raw: bytes | str) -> int:
        """Validate and route one message; returns the number of sessions it reached."""
        return await self.handle_batch([(channel, raw)])

    async def handle_batch(self, messages: list[Message]) -> int:
        """Validate and route messages in arrival order; returns the deliveries made.

        One database query checks every named ticket of the batch: a lookup per
        message would cost a thread hand-off each and throttle the hub under load.
        """
        candidates: list[tuple[str, Event]] = []
        for channel, raw in messages:
            self.counters["received"] += 1
            # Any message may announce a change, even one dropped below (a ticket that
            # just became sensitive must leave every cached figure too).
            changed = municipality_from_channel(channel)
            if changed is not None:
                self._changes[changed] += 1
            try:
                event = parse_event(raw, channel)
            except EventRejected as exc:
                self._drop(exc.reason, channel)
                continue
            except Exception:  # a parser bug must cost one message, never the hub
                log.exception("unexpected error parsing a live message")
                self._drop("parse_error", channel)
                continue
            if event.municipality_id not in self._sessions and not self.replay.watched(event.municipality_id):
                self.counters["no_audience"] += 1  # nobody here to tell: no lookup either
                continue
            candidates.append((channel, event))
        lookup = await self._lookup([e for _, e in candidates])
        if lookup is None:
            # The database could not say what these events are (down, restarting, too slow): the
            # events that name a ticket are dropped below (fail closed), so their sessions reload
            # from the database instead, now or, while it is away, as soon as it answers again.
            self._resync_municipalities({e.municipality_id for _, e in candidates})
        delivered = 0
        for channel, event in candidates:
            decision = route(event, lookup)
            if isinstance(decision, DropReason):
                self._drop(decision, channel)
                if decision is DropReason.LOOKUP_FAILED:  # maybe a visible event: a stream cannot resume past it
                    self.replay.gap(event.municipality_id)
                continue
            if decision.narrowed is not None:
                # Delivered to whole-municipality sessions only: counted, as councillors missed it.
                self._drop(decision.narrowed, channel)
            position = self.replay.record(decision.event, councillors=decision.narrowed is None)
            audience = self._audience(decision.event.municipality_id, decision.event.ward_id,
                                      councillors=decision.narrowed is None)
            if not audience:
                self.counters["no_audience"] += 1
                continue
            for feed in audience:
                feed.offer(decision.event, position)
            self.counters["routed"] += 1
            self.counters["delivered"] += len(audience)
            delivered += len(audience)
        return delivered

    def _resync_municipalities(self, municipalities: set[uuid.UUID]) -> None:
        with self._lock:
            feeds = [f for m in municipalities for group in self._sessions.get(m, {}).values() for f in group.values()]
        for feed in feeds:
            feed.mark_resync()
        self.counters["resyncs_after_failed_lookup"] += len(feeds)

    async def _lookup(self, events: list[Event]) -> TicketLookup | None:
        """The database's word on every ticket the batch names, in one round trip.

        None when the lookup failed: events naming a ticket are then dropped
        (fail closed). Without an engine (bus tests only) nothing resolves, so
        no event reaches a councillor.
        """
        if self.engine is None or not events:
            return TicketLookup()
        try:
            lookup = await SHORT.run(lookup_named_tickets, self.engine,
                                     [e.ticket_id for e in events if e.ticket_id is not None],
                                     [e.tracking_key for e in events if e.tracking_key])
        except Exception as exc:
            log.warning("ticket lookup failed, %d events affected: %s", len(events), type(exc).__name__)
            return None
        self.counters["ticket_lookups"] += 1
        return lookup

    # ------------------------------------------------------- the subscriber

    async def start(self) -> None:
        """Start the subscriber task on the running loop; idempotent."""
        if self._task is not None and not self._task.done():
            return
        self._status_changed = asyncio.Event()
        self._status = "connecting"
        self._task = asyncio.get_running_loop().create_task(self._run(), name="opsdash-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_streams()  # what was queued goes out now
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._set_status("stopped")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        attempt = 0
        while True:
            subscription = None
            try:
                subscription = await self.bus.subscribe(CHANNEL_PATTERN)
                self.connected_at = time.time()
                self.counters["connects"] += 1
                attempt = 0
                self._set_status("live")
                async for batch in subscription.batches():
                    await self.handle_batch(batch)
                raise BusUnavailable("subscription ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # BusUnavailable, or anything else the client raised
                self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                if self._status == "live":
                    log.warning("live updates paused: %s", self.last_error)
                self.counters["disconnects"] += 1
                self._set_status("paused")
            finally:
                if subscription is not None:
                    # Close every connection we opened, or reconnects would leak them.
                    await subscription.close()
            delay = backoff_delay(attempt, self.base_delay, self.max_delay, self._rng)
            attempt += 1
            self.counters["reconnect_attempts"] += 1
            await asyncio.sleep(delay)


__all__ = ["Delivery", "Drained", "Hub", "HubStatus", "SessionFeed", "StreamFeed", "backoff_delay", "route", "SENSITIVE_REASONS"]
