"""A process-wide cache of the dashboard's SQL results, kept fresh by live events.

At 1,000,000 tickets one dashboard load costs ~1-2 s of PostgreSQL time.
Many sessions look at the same thing (a municipality's managers, a wall
screen, every reload), so results are shared, and a query that is already
running is awaited rather than started again.

Freshness (docs/architecture.md: the database is the source of truth; events only
trigger reloads): a result is reused

- while live updates are up, up to ``max_age_s`` (60 s) as long as its
  *change mark* is unchanged, and never once it moved. The mark comes from
  the process's live hub (``Hub.change_mark``): it moves with every live
  event of the municipality and with every reconnect. A change that
  published no event shows within ``max_age_s``;
- while live updates are down (no mark), for ``ttl_s`` (5 s).

After an event a dashboard therefore shows it at its next refresh (the
debounce), and an idle municipality's dashboards load from the cache. (Until
issue 17 a result was also shared for ``ttl_s`` across a change: a refresh
within those seconds, or a page reopened after a lost connection, then kept
the old figures until the next event.)

A caller finding the same query running waits for it at most ``WAIT_S``
(as long as a dashboard load may wait for a worker: ``data.workers.DASHBOARD``),
then gets DatabaseBusy rather than a second copy of a query that is already slow.

Every caller gets its own copy of the pandas objects in a result: a session
changing its frame in place cannot change what another session shows. (The
frames are aggregates and pages: the figures of 20 wards have 945 rows at
any ticket count, a million included, and copy in 0.1-0.3 ms, measured.)

Safety: the key holds exactly what the scoped SQL depends on
(``scope_key``): municipality, whether the scope is one ward and which,
the time zone (local-day boundaries); plus the filters and arguments. Two
scopes that could see different rows never share an entry.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, NamedTuple, TypeVar

import pandas as pd

from data.errors import DatabaseBusy
from data.metrics import CACHE_HITS, CACHE_MISSES, QUERY_SECONDS
from data.scope import Scope
from data.workers import DASHBOARD

T = TypeVar("T")
TTL_S = 5.0
MAX_AGE_S = 60.0
MAX_ENTRIES = 512
#: How long a caller waits for another's run of the same query (then DatabaseBusy).
WAIT_S = DASHBOARD.wait_s
log = logging.getLogger("opsdash.query_cache")

_lock = threading.Lock()
_entries: OrderedDict[Hashable, _Entry] = OrderedDict()
_running: dict[Hashable, threading.Event] = {}
_clock: Callable[[], float] = time.monotonic  # replaced by tests that control time


class _Entry(NamedTuple):
    computed_at: float
    mark: Hashable | None
    value: Any


def scope_key(scope: Scope) -> tuple:
    """What ``data.tickets.scope_conditions`` and the local-day maths depend on."""
    return (str(scope.municipality_id), scope.is_councillor, scope.ward_id, scope.timezone)


def _key(name: str, engine: Any, scope: Scope, args: Hashable) -> tuple:
    return (name, str(engine.url), scope_key(scope), args)


def _fresh(entry: _Entry | None, mark: Hashable | None, ttl_s: float, max_age_s: float) -> bool:
    if entry is None:
        return False
    age = _clock() - entry.computed_at
    if mark is not None:
        # Live updates up: the mark decides. A result from before a change (or of unknown age
        # relative to it: no mark) is never shared, not even within ttl_s: the refresh the change
        # caused (or a page opened after it, which gets no refresh for it at all) would otherwise
        # show the old figures until the next event.
        return entry.mark == mark and age < max_age_s
    return age < ttl_s


class CacheMiss(LookupError):
    """``peek`` found no fresh result."""


def peek(name: str, engine: Any, scope: Scope, args: Hashable, ttl_s: float = TTL_S,
         mark: Hashable | None = None, max_age_s: float = MAX_AGE_S) -> Any:
    """The fresh result ``cached`` would return, without computing anything; else CacheMiss."""
    key = _key(name, engine, scope, args)
    with _lock:
        entry = _entries.get(key)
        if ttl_s > 0 and _fresh(entry, mark, ttl_s, max_age_s):
            _entries.move_to_end(key)
            CACHE_HITS.labels(name).inc()
            return _own_copy(entry.value)  # type: ignore[union-attr]
    # Not a miss yet: the caller now asks ``cached``, which counts it.
    raise CacheMiss(name)


def timed(kind: str, compute: Callable[[], T]) -> T:
    """``compute()``, its duration in the ``opsdash_query_seconds`` histogram under ``kind``.

    The one place the dashboard's queries run (``cached`` on a miss, and the
    store's ``uncached``), so the histogram has every query a view makes.
    """
    with QUERY_SECONDS.labels(kind).time():
        return compute()


def cached(name: str, engine: Any, scope: Scope, args: Hashable, compute: Callable[[], T],
           ttl_s: float = TTL_S, mark: Hashable | None = None, max_age_s: float = MAX_AGE_S) -> T:
    """``compute()``, shared by every caller with the same name, database, scope and args.

    ``mark``: the change mark read *before* computing (so a change during
    the query makes the result stale, never the other way round); None when
    unknown. ``ttl_s`` <= 0 never caches. Values are immutable, pandas objects
    (each caller gets a copy) or dataclasses of them.
    """
    if ttl_s <= 0:
        return timed(name, compute)
    key = _key(name, engine, scope, args)
    while True:
        with _lock:
            entry = _entries.get(key)
            if _fresh(entry, mark, ttl_s, max_age_s):
                _entries.move_to_end(key)
                CACHE_HITS.labels(name).inc()  # also a caller that waited for another's run of it
                return _own_copy(entry.value)  # type: ignore[union-attr]
            waiting = _running.get(key)
            if waiting is None:
                _running[key] = threading.Event()
                break
        # Another session is computing exactly this: then look again.
        if not waiting.wait(timeout=WAIT_S):
            log.warning("gave up waiting %.0f s for another session's %s query", WAIT_S, name)
            raise DatabaseBusy(DASHBOARD.busy_message)
    CACHE_MISSES.labels(name).inc()
    try:
        started = _clock()
        value = timed(name, compute)  # errors are not cached: the next caller tries again
        with _lock:
            _entries[key] = _Entry(started, mark, value)
            _entries.move_to_end(key)
            while len(_entries) > MAX_ENTRIES:
                _entries.popitem(last=False)
        return _own_copy(value)
    finally:
        with _lock:
            _running.pop(key).set()


def _own_copy(value: T) -> T:
    """``value`` for one caller: its pandas objects copied (deeply: values, not only the frame)."""
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return value.copy(deep=True)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _own_copy(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


def clear() -> None:
    with _lock:
        _entries.clear()
