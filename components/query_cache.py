"""A short-lived, process-wide cache of the dashboard's SQL results.

At 1,000,000 tickets one dashboard load costs ~2-5 s of PostgreSQL time
(KPIs with a median over every responded ticket, the backlog series, the
counts). Many sessions look at the same thing (a municipality's managers,
a wall screen, every reload), so results are shared for ``TTL_S`` seconds
and a query that is already running is awaited rather than started again.

Freshness: entries are keyed by a time bucket of ``TTL_S``, so after a live
event a dashboard converges to the database within the debounce plus
``TTL_S`` (design.md: the database is the source of truth; events only
trigger reloads).

Safety: the key holds exactly what the scoped SQL depends on
(``scope_key``): municipality, whether the scope is one ward and which,
the time zone (local-day boundaries); plus the filters and arguments. Two
scopes that could see different rows never share an entry.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, TypeVar

from data.scope import Scope

T = TypeVar("T")
TTL_S = 5.0
MAX_ENTRIES = 512

_lock = threading.Lock()
_entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
_running: dict[Hashable, threading.Event] = {}
_clock: Callable[[], float] = time.time  # replaced by tests that must not cross a bucket boundary


def scope_key(scope: Scope) -> tuple:
    """What ``data.tickets.scope_conditions`` and the local-day maths depend on."""
    return (str(scope.municipality_id), scope.is_councillor, scope.ward_id, scope.timezone)


def cached(name: str, engine: Any, scope: Scope, args: Hashable, compute: Callable[[], T],
           ttl_s: float = TTL_S) -> T:
    """``compute()``, shared for ``ttl_s`` by every caller with the same name, database, scope and args."""
    if ttl_s <= 0:
        return compute()
    key = (name, str(engine.url), scope_key(scope), args, int(_clock() // ttl_s))
    while True:
        with _lock:
            hit = _entries.get(key)
            if hit is not None:
                _entries.move_to_end(key)
                return hit[1]
            waiting = _running.get(key)
            if waiting is None:
                _running[key] = threading.Event()
                break
        waiting.wait(timeout=60)  # another session is computing exactly this
    try:
        value = compute()  # errors are not cached: the next caller tries again
        with _lock:
            _entries[key] = (_clock(), value)
            while len(_entries) > MAX_ENTRIES:
                _entries.popitem(last=False)
        return value
    finally:
        with _lock:
            _running.pop(key).set()


def clear() -> None:
    with _lock:
        _entries.clear()
