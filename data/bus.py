"""Event buses: one interface, two transports.

``RedisBus`` is Redis Pub/Sub through redis.asyncio (one connection per
subscription: the hub subscribes once per process) on one server, a Redis
Cluster or the master Sentinel names (``data.redis_nodes``). ``InProcessBus`` serves
one process without Redis (the default of ``make serve``); it can drop its
subscriptions as a lost connection would, so the hub's reconnect path is
exercised without Redis too. Both carry raw messages: validation is
``data.events``' job and the hub's.
"""
from __future__ import annotations

import asyncio
import fnmatch
import os
import random
import threading
from typing import AsyncIterator, Protocol

from .redis_nodes import ClusterNodes, connect_node, parse_redis_url

CHANNEL_PREFIX = "dashboard:"
CHANNEL_PATTERN = CHANNEL_PREFIX + "*"
Message = tuple[str, "bytes | str"]
#: Most messages handed to the hub at once (what is already buffered, never a wait).
MAX_BATCH = 500


class Subscription(Protocol):
    """One subscriber connection: yields lists of (channel, raw message) until closed or lost.

    A list holds what had already arrived (at most MAX_BATCH): a hub that
    falls behind catches up in batches, one database lookup per batch.
    """

    def batches(self) -> AsyncIterator[list[Message]]: ...

    async def close(self) -> None: ...


class EventBus(Protocol):
    name: str

    async def publish(self, channel: str, message: str) -> int: ...

    async def subscribe(self, pattern: str = CHANNEL_PATTERN) -> Subscription: ...

    async def close(self) -> None: ...


class BusUnavailable(ConnectionError):
    """The bus lost (or never had) its connection; the hub reconnects."""


class RedisSubscription:
    def __init__(self, client, pubsub, others: list | None = None) -> None:
        self._client = client
        self._pubsub = pubsub
        self._others = others or []  # Sentinel's own connections

    async def batches(self) -> AsyncIterator[list[Message]]:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        while True:
            batch: list[Message] = []
            try:
                # Wait for the first message, then take what is already buffered.
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                while message is not None:
                    if message.get("type") in ("pmessage", "message"):
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode("utf-8", "replace")
                        batch.append((channel, message["data"]))
                    if len(batch) >= MAX_BATCH:
                        break
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise BusUnavailable(f"Redis subscription lost: {exc}") from exc
            if batch:
                yield batch

    async def close(self) -> None:
        for closable in (self._pubsub, self._client, *self._others):
            try:
                await closable.aclose()
            except Exception:  # closing a dead connection must not mask the original error
                pass


class RedisBus:
    """Redis Pub/Sub on one server, a Redis Cluster or Sentinel's master (``data.redis_nodes``).

    Each ``subscribe`` opens exactly one connection (the hub calls it once per
    (re)connection); on a cluster, to one node, which receives what is published on any node.
    """

    def __init__(self, url: str, *, client_name: str | None = None, rng: random.Random | None = None) -> None:
        self.url = url
        self.target = parse_redis_url(url)
        self.name = self.target.bus_name
        # The pid in the name lets an operator (and bench_live) count the
        # subscriber connections of each process in CLIENT LIST.
        self.client_name = client_name or f"opsdash-hub-{os.getpid()}"
        self._nodes = ClusterNodes(self.target.nodes, rng) if self.target.kind == "cluster" else None
        self._publisher = None
        self._publisher_others: list = []
        #: Where the subscription is now (``host:port``; the URL's server when not a cluster or Sentinel).
        self.node = ""

    async def _connect(self, **kwargs):
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No hidden retries: redis-py would otherwise reconnect and resubscribe
        # silently, and the sessions would never learn they missed events.
        return await connect_node(self.target, self._nodes, retry=Retry(NoBackoff(), 0), socket_connect_timeout=3,
                                  health_check_interval=15, **kwargs)

    async def publish(self, channel: str, message: str) -> int:
        from redis.exceptions import RedisError

        try:
            if self._publisher is None:
                self._publisher, self._publisher_others = await self._connect()
            return int(await self._publisher.publish(channel, message))
        except (RedisError, OSError) as exc:
            # The next publish connects again: on a cluster to another node, with Sentinel to its master now.
            await self.close()
            raise BusUnavailable(f"cannot publish to {self.name}: {type(exc).__name__}: {str(exc)[:200]}") from exc

    async def subscribe(self, pattern: str = CHANNEL_PATTERN) -> RedisSubscription:
        from redis.exceptions import RedisError

        client = pubsub = None
        others: list = []
        try:
            client, others = await self._connect(client_name=self.client_name)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.psubscribe(pattern)
            connection = pubsub.connection
            self.node = f"{getattr(connection, 'host', '')}:{getattr(connection, 'port', '')}".strip(":")
        except (RedisError, OSError) as exc:
            await RedisSubscription(client, pubsub, others).close()
            raise BusUnavailable(f"cannot subscribe on {self.name}: {type(exc).__name__}: {str(exc)[:200]}") from exc
        return RedisSubscription(client, pubsub, others)

    async def close(self) -> None:
        publisher, others, self._publisher, self._publisher_others = self._publisher, self._publisher_others, None, []
        for closable in ([publisher] if publisher is not None else []) + others:
            try:
                await closable.aclose()
            except Exception:
                pass


class InProcessSubscription:
    def __init__(self, bus: InProcessBus, pattern: str, loop: asyncio.AbstractEventLoop) -> None:
        self.bus = bus
        self.pattern = pattern
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def deliver(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def batches(self) -> AsyncIterator[list[Message]]:
        while True:
            item = await self.queue.get()
            batch: list[Message] = []
            while True:
                if isinstance(item, BaseException):
                    if batch:
                        yield batch  # what arrived before the loss still counts
                    raise item
                batch.append(item)
                if len(batch) >= MAX_BATCH or self.queue.empty():
                    break
                item = self.queue.get_nowait()
            yield batch

    async def close(self) -> None:
        self.bus._remove(self)


class InProcessBus:
    """Pub/Sub inside one process (no Redis). Thread-safe: publishers may run anywhere.

    ``disconnect_all`` drops every subscription as a lost Redis connection
    would, so the hub's reconnect path is exercised without Redis too.
    """

    name = "in-process"

    def __init__(self) -> None:
        self._subs: list[InProcessSubscription] = []
        self._lock = threading.Lock()
        self.available = True

    async def publish(self, channel: str, message: str) -> int:
        return self.publish_now(channel, message)

    def publish_now(self, channel: str, message: str) -> int:
        if not self.available:
            raise BusUnavailable("the in-process bus is unavailable")
        with self._lock:
            targets = [s for s in self._subs if fnmatch.fnmatchcase(channel, s.pattern)]
        for sub in targets:
            sub.deliver((channel, message))
        return len(targets)

    async def subscribe(self, pattern: str = CHANNEL_PATTERN) -> InProcessSubscription:
        if not self.available:
            raise BusUnavailable("the in-process bus is unavailable")
        sub = InProcessSubscription(self, pattern, asyncio.get_running_loop())
        with self._lock:
            self._subs.append(sub)
        return sub

    def _remove(self, sub: InProcessSubscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def disconnect_all(self) -> None:
        with self._lock:
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.deliver(BusUnavailable("in-process bus disconnected"))

    async def close(self) -> None:
        self.disconnect_all()


_default_in_process: InProcessBus | None = None
_default_lock = threading.Lock()


def bus_for(redis_url: str | None) -> EventBus:
    """The bus of the settings: Redis when a URL is set, else this process's in-process bus."""
    global _default_in_process
    if redis_url:
        return RedisBus(redis_url)
    with _default_lock:
        if _default_in_process is None:
            _default_in_process = InProcessBus()
        return _default_in_process
