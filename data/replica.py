"""A PostgreSQL streaming replica for the dashboard's reads (``OPSDASH_READ_DATABASE_URL``).

What may read there: the figures, the table's pages, exports' rows, notebook
frames (``ReadRoute.engine()``, chosen by whoever calls the read function: the
dashboard's store, the export). What never does: sign-in, sessions, the user
record a Scope is built from, the live hub's ticket lookups, the audit, every
write (``data.db.get_engine`` of ``OPSDASH_DATABASE_URL``, the primary).

A replica is behind the primary by its replay lag. A read that saw an old row
could show a ticket the ticketing system has just flagged sensitive, or moved to
another ward. So the replica answers a read only once it has replayed
everything the primary had flushed when the read began (the primary's
``pg_current_wal_flush_lsn()``, compared with the replica's
``pg_last_wal_replay_lsn()``, waiting up to ``catch_up_s``): what it returns is
then what the primary would have returned, and whatever a live event announced
(published after its commit) is in it. A replica that does not catch up in
time, or cannot be reached, hands every read to the primary for ``recheck_s``;
users then see current data, never older, and the primary carries the load.
This is the check GitLab's database load balancer makes before it reads from
a replica; nothing here replicates anything: PostgreSQL's streaming
replication does.

``replica_lag_s`` is the operator's figure (``/health`` details, the
Operations page).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

from sqlalchemy import Engine, text

from .db import get_engine

log = logging.getLogger("opsdash.replica")

#: How long a read waits for the replica to replay the primary's position (streaming replicas are
#: milliseconds behind; more than this and the primary answers).
CATCH_UP_S = 0.5
#: After the replica failed to catch up (or to answer), reads go to the primary this long before it is tried again.
RECHECK_S = 5.0
POLL_S = 0.005

_LAG_SQL = text(
    "SELECT pg_is_in_recovery(), "
    "CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0.0 "
    "ELSE EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 END")
_PRIMARY_POSITION_SQL = text("SELECT pg_current_wal_flush_lsn()::text")
_REPLAYED_SQL = text("SELECT pg_is_in_recovery() AND pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)")


_routes: dict[tuple[str, str | None], "ReadRoute"] = {}
_routes_lock = threading.Lock()


def read_route(primary_url: str, replica_url: str | None) -> ReadRoute:
    """The process-wide ReadRoute of these URLs (one, as ``data.db.get_engine`` keeps one Engine per URL)."""
    with _routes_lock:
        route = _routes.get((primary_url, replica_url))
        if route is None:
            route = _routes[(primary_url, replica_url)] = ReadRoute(
                get_engine(primary_url), get_engine(replica_url) if replica_url else None)
        return route


def replica_lag_s(engine: Engine) -> float | None:
    """Seconds the data of the replica behind ``engine`` is older than the primary's; None when it is no replica.

    0.0 when it has replayed all it received; while replay waits (or is paused) with
    WAL pending, the time since the last transaction it replayed was committed.
    None for a primary and SQLite. Raises what the connection raises.
    """
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        in_recovery, lag = connection.execute(_LAG_SQL).one()
    if not in_recovery:
        return None
    return max(0.0, float(lag)) if lag is not None else 0.0


class ReadRoute:
    """Which engine answers a read: the replica once it holds what the primary had, else the primary.

    Without a replica, always the primary. ``counts`` tells the operator how reads went
    (``replica``, ``primary_replica_behind``, ``primary_replica_unreachable``, ``primary_recheck_wait``).
    Thread-safe: called from the worker lanes.
    """

    def __init__(self, primary: Engine, replica: Engine | None = None, *, catch_up_s: float = CATCH_UP_S,
                 recheck_s: float = RECHECK_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.primary, self.replica = primary, replica
        self.catch_up_s, self.recheck_s, self._clock = catch_up_s, recheck_s, clock
        self._lock = threading.Lock()
        self._primary_until = 0.0
        self.counts: collections.Counter[str] = collections.Counter()

    def engine(self) -> Engine:
        """The engine for one read starting now (blocking: call it where the read runs, in a worker lane)."""
        replica = self.replica
        if replica is None:
            return self.primary
        with self._lock:
            waiting = self._clock() < self._primary_until
        if waiting:
            return self._primary("primary_recheck_wait")
        try:
            with self.primary.connect() as connection:
                position = connection.execute(_PRIMARY_POSITION_SQL).scalar_one()
        except Exception:
            return self.primary  # the primary's own error shows where the read fails
        deadline = self._clock() + self.catch_up_s
        try:
            with replica.connect() as connection:
                while not connection.execute(_REPLAYED_SQL, {"lsn": position}).scalar():
                    if self._clock() >= deadline:
                        return self._primary("primary_replica_behind", recheck=True)
                    connection.rollback()  # a fresh snapshot of the replay position next time
                    time.sleep(POLL_S)
        except Exception as exc:
            log.warning("read replica unreachable (%s): reads go to the primary", type(exc).__name__)
            return self._primary("primary_replica_unreachable", recheck=True)
        with self._lock:
            self.counts["replica"] += 1
        return replica

    def _primary(self, reason: str, *, recheck: bool = False) -> Engine:
        with self._lock:
            self.counts[reason] += 1
            n = self.counts[reason]
            if recheck:
                self._primary_until = self._clock() + self.recheck_s
        if recheck and n & (n - 1) == 0:  # 1, 2, 4, ...: a long lag cannot flood the log
            log.warning("read replica %s: reads go to the primary for %.0f s (%d times so far)",
                        reason.removeprefix("primary_").replace("_", " "), self.recheck_s, n)
        return self.primary

    def snapshot(self) -> dict[str, object]:
        """For ``/health`` details: whether a replica is configured, its lag, where reads went."""
        if self.replica is None:
            return {"configured": False}
        try:
            lag: object = replica_lag_s(self.replica)
        except Exception as exc:
            lag = f"error: {type(exc).__name__}"
        with self._lock:
            counts = dict(self.counts)
        return {"configured": True, "lag_s": lag, "reads": counts}


__all__ = ["CATCH_UP_S", "RECHECK_S", "ReadRoute", "read_route", "replica_lag_s"]
