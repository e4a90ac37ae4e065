"""Event buses: one interface, two transports.

``RedisBus`` is Redis Pub/Sub through redis.asyncio (one connection per
subscription: the hub subscribes once per process). ``InProcessBus`` serves
one process without Redis (the default of ``make serve``); it can drop its
subscriptions as a lost connection would, so the hub's reconnect path is
exercised without Redis too. Both carry raw messages: validation is
``data.events``' job and the hub's.
"""
from __future__ import annotations

import asyncio
import fnmatch
import os
import threading
from typing import AsyncIterator, Protocol

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
    def __init__(self, client, pubsub) -> None:
        self._client = client
        self._pubsub = pubsub

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
        try:
            await self._pubsub.aclose()
        except Exception:  # closing a dead connection must not mask the original error
            pass
        try:
            await self._client.aclose()
        except Exception:
            pass


class RedisBus:
    """Redis Pub/Sub. Each ``subscribe`` opens exactly one connection (the hub calls it once)."""

    name = "redis"

    def __init__(self, url: str, *, client_name: str | None = None) -> None:
        self.url = url
        # The pid in the name lets an operator (and bench_live) count the
        # subscriber connections of each process in CLIENT LIST.
        self.client_name = client_name or f"opsdash-hub-{os.getpid()}"
        self._publisher = None

    def _client(self, **kwargs):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No hidden retries: redis-py would otherwise reconnect and resubscribe
        # silently, and the sessions would never learn they missed events.
        return aioredis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=3, health_check_interval=15, **kwargs
        )

    async def publish(self, channel: str, message: str) -> int:
        from redis.exceptions import ConnectionError as RedisConnectionError

        if self._publisher is None:
            self._publisher = self._client()
        try:
            return int(await self._publisher.publish(channel, message))
        except (RedisConnectionError, OSError) as exc:
            raise BusUnavailable(f"cannot publish to Redis at {self.url}: {exc}") from exc

    async def subscribe(self, pattern: str = CHANNEL_PATTERN) -> RedisSubscription:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        client = self._client(client_name=self.client_name)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(pattern)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await RedisSubscription(client, pubsub).close()
            raise BusUnavailable(f"cannot subscribe at {self.url}: {exc}") from exc
        return RedisSubscription(client, pubsub)

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None


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
