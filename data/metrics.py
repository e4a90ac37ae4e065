"""What an operator measures: the process's Prometheus metrics (``/metrics``, the Operations page).

One registry per process, never prometheus_client's global one (nothing a
library registers there leaks out), and every series carries a ``process``
label (``host:pid``): each ``opsdash serve`` process is its own scrape target,
and the label keeps their series apart wherever they are summed or shown
together. Why not prometheus_client's multiprocess mode: it is for workers
forked by one parent on one host sharing a directory of memory-mapped files;
OpsDash processes are independent (often on several hosts), and the figures
read at scrape time from live objects (sessions, the hub's counters, the
connection pool, the worker lanes) have no place in those files
(docs/architecture.md, "Operations").

Counters of things that happen (sign-ins, exports, cache hits, query times)
are metric objects defined here and moved where they happen. Figures that
live objects already keep (the hub's counters, the pool, the lanes) are read
only when scraped (``Collector``s registered by the server): the hot paths pay
nothing for them. No label ever holds user input: every label value comes
from a fixed set (roles, drop reasons, formats, channels, outcomes, query
kinds, lanes).
"""
from __future__ import annotations

import os
import socket
from typing import Any, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.samples import Sample

from .models import DASHBOARD_ROLES

# No ``_created`` series (a start time per counter): a third of the text for nothing a dashboard reads.
disable_created_metrics()

#: This process in every series: host name and process id.
PROCESS = f"{socket.gethostname()}:{os.getpid()}"

#: The metric objects live here; ``EXPOSED`` adds the ``process`` label when scraped.
REGISTRY = CollectorRegistry(auto_describe=True)

SESSIONS = Gauge("opsdash_sessions_open", "Open dashboard sessions of this process, by the user's role",
                 ["role"], registry=REGISTRY)
QUEUE_DEPTH = Histogram(
    "opsdash_live_queue_depth", "Events waiting in a session's live queue when it drains (every drain)",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000), registry=REGISTRY)
PUBLISH_LATENCY = Histogram(
    "opsdash_live_publish_to_session_seconds",
    "From an event's occurred_at (its arrival at the hub when it has none) to its session's drain",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60), registry=REGISTRY)
QUERY_SECONDS = Histogram(
    "opsdash_query_seconds", "Time of the dashboard's database queries, by kind (cache misses only)", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
CACHE_HITS = Counter("opsdash_query_cache_hits", "Dashboard query results served from the shared cache",
                     ["kind"], registry=REGISTRY)
CACHE_MISSES = Counter("opsdash_query_cache_misses", "Dashboard queries that ran because no fresh result was cached",
                       ["kind"], registry=REGISTRY)
EXPORTS = Counter("opsdash_exports", "Exports by format, channel (ui, http, cli) and outcome (ok, error)",
                  ["format", "channel", "outcome"], registry=REGISTRY)
EXPORT_SECONDS = Histogram("opsdash_export_seconds", "Duration of exports that were written and audited",
                           ["format", "channel"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                           registry=REGISTRY)
EXPORT_ROWS = Histogram("opsdash_export_rows", "Rows of exports that were written and audited", ["format", "channel"],
                        buckets=(0, 10, 100, 1000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000),
                        registry=REGISTRY)
SIGN_INS = Counter(
    "opsdash_sign_ins",
    "Sign-in attempts by outcome: ok, failed (wrong name or password), throttled, unavailable, refused (cross-site)",
    ["outcome"], registry=REGISTRY)
THROTTLED = Counter("opsdash_sign_in_throttled", "Password checks refused by the sign-in throttle", registry=REGISTRY)
SIGN_IN_OUTCOMES = ("ok", "failed", "throttled", "unavailable", "refused")
# Every outcome and role reads 0 from the start: rate() sees the first increase, Grafana lists the series.
for _outcome in SIGN_IN_OUTCOMES:
    SIGN_INS.labels(_outcome)
for _role in sorted(role.value for role in DASHBOARD_ROLES):
    SESSIONS.labels(_role)
#: The kinds of query the dashboard makes (``components.query_cache`` names); others appear when first run.
QUERY_KINDS = ("figures", "median", "rows", "kpis", "hidden_categories")
for _kind in QUERY_KINDS:
    QUERY_SECONDS.labels(_kind)
    CACHE_HITS.labels(_kind)
    CACHE_MISSES.labels(_kind)


class HubCollector:
    """The live hub's own counters, read when scraped: received, delivered, dropped by reason, status."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any] | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        snap = self._snapshot() or {}
        counters, dropped = dict(snap.get("counters", {})), dict(snap.get("dropped", {}))
        received = CounterMetricFamily("opsdash_live_events_received", "Live messages the hub received")
        received.add_metric([], counters.get("received", 0))
        delivered = CounterMetricFamily("opsdash_live_events_delivered",
                                        "Live events put in session queues (one per session reached)")
        delivered.add_metric([], counters.get("delivered", 0))
        drops = CounterMetricFamily("opsdash_live_events_dropped",
                                    "Live messages the hub dropped, by reason (malformed, sensitive, ...)",
                                    labels=["reason"])
        for reason, count in sorted(dropped.items()):
            drops.add_metric([str(reason)], count)
        up = GaugeMetricFamily("opsdash_live_hub_up", "1 while the live hub is subscribed (live), else 0")
        up.add_metric([], 1 if snap.get("status") == "live" else 0)
        return [received, delivered, drops, up]


class PoolCollector:
    """Database connections per engine (``primary``, ...): in use, and the pool's size; read when scraped."""

    def __init__(self, engines: Callable[[], Mapping[str, Any]]) -> None:
        self._engines = engines

    def collect(self) -> Iterable[Metric]:
        in_use = GaugeMetricFamily("opsdash_db_pool_in_use", "Database connections checked out of the pool",
                                   labels=["database"])
        size = GaugeMetricFamily("opsdash_db_pool_size", "Connections the pool keeps open", labels=["database"])
        for name, engine in self._engines().items():
            pool = engine.pool
            if hasattr(pool, "checkedout"):
                in_use.add_metric([name], pool.checkedout())
            if hasattr(pool, "size"):
                size.add_metric([name], pool.size())
        return [in_use, size]


class ReplicaCollector:
    """The read replica's lag behind the primary and where reads went (``data.replica.ReadRoute``); read when scraped.

    No series without a replica; a replica that does not answer shows no lag (its reads go to the primary,
    counted under ``primary_replica_unreachable``).
    """

    def __init__(self, route: Callable[[], Any]) -> None:
        self._route = route

    def collect(self) -> Iterable[Metric]:
        snapshot = self._route().snapshot()
        lag = GaugeMetricFamily("opsdash_db_replica_lag_seconds",
                                "How far the read replica's replay is behind the primary, in seconds")
        reads = CounterMetricFamily("opsdash_db_reads", "Dashboard reads by where they went", labels=["route"])
        if snapshot.get("configured"):
            if isinstance(snapshot.get("lag_s"), (int, float)):
                lag.add_metric([], float(snapshot["lag_s"]))
            for route, count in dict(snapshot.get("reads") or {}).items():
                reads.add_metric([str(route)], count)
        return [lag, reads]


class LaneCollector:
    """Tasks of each worker lane (``data.workers``): running, queued, refused; read when scraped."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        tasks = GaugeMetricFamily("opsdash_worker_tasks", "Tasks of a worker lane, running or queued",
                                  labels=["lane", "state"])
        refused = CounterMetricFamily("opsdash_worker_refused", "Tasks refused: no thread of their lane in time",
                                      labels=["lane"])
        for lane, figures in self._snapshot().items():
            tasks.add_metric([lane, "running"], figures.get("running", 0))
            tasks.add_metric([lane, "queued"], figures.get("queued", 0))
            refused.add_metric([lane], figures.get("refused", 0))
        return [tasks, refused]


def register_collector(collector: Any) -> None:
    """Add a scrape-time collector (idempotent per object); the server registers its live objects."""
    try:
        REGISTRY.register(collector)
    except ValueError:  # already registered (a second start of the same process's server)
        pass


def unregister_collector(collector: Any) -> None:
    try:
        REGISTRY.unregister(collector)
    except KeyError:
        pass


class _ProcessLabelled:
    """``REGISTRY`` with the ``process`` label added to every sample."""

    def collect(self) -> Iterable[Metric]:
        for family in REGISTRY.collect():
            labelled = Metric(family.name, family.documentation, family.type)
            labelled.samples = [Sample(s.name, {**s.labels, "process": PROCESS}, *s[2:]) for s in family.samples]
            yield labelled


EXPOSED = CollectorRegistry(auto_describe=False)
EXPOSED.register(_ProcessLabelled())  # type: ignore[arg-type]


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of this process's metrics and its content type."""
    return generate_latest(EXPOSED), CONTENT_TYPE_LATEST


def figures() -> list[dict[str, Any]]:
    """Every series of this process as rows for a table (the Operations page).

    Counters and gauges give their value; a histogram one row per label set
    with its count, mean and the median and 95th percentile estimated from
    its buckets (the upper bound of the bucket the quantile falls in).
    """
    rows: list[dict[str, Any]] = []
    for family in REGISTRY.collect():
        if family.type == "histogram":
            rows.extend(_histogram_rows(family))
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            rows.append({"metric": family.name, "labels": _label_text(sample.labels), "value": sample.value,
                         "count": None, "mean": None, "p50": None, "p95": None})
    return rows


def _label_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _histogram_rows(family: Metric) -> list[dict[str, Any]]:
    series: dict[str, dict[str, Any]] = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        entry = series.setdefault(_label_text(labels), {"buckets": [], "count": 0.0, "sum": 0.0})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            entry["count"] = sample.value
        elif sample.name.endswith("_sum"):
            entry["sum"] = sample.value
    rows = []
    for labels, entry in series.items():
        count = entry["count"]
        rows.append({"metric": family.name, "labels": labels, "value": None, "count": count,
                     "mean": entry["sum"] / count if count else None,
                     "p50": bucket_quantile(entry["buckets"], 0.5), "p95": bucket_quantile(entry["buckets"], 0.95)})
    return rows


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the cumulative bucket holding quantile ``q`` (None without observations)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    target = q * ordered[-1][1]
    for bound, cumulative in ordered:
        if cumulative >= target:
            return bound
    return ordered[-1][0]


__all__ = ["CACHE_HITS", "CACHE_MISSES", "EXPORTS", "EXPORT_ROWS", "EXPORT_SECONDS", "EXPOSED", "HubCollector",
           "LaneCollector", "PROCESS", "ReplicaCollector", "PUBLISH_LATENCY", "PoolCollector", "QUERY_SECONDS", "QUEUE_DEPTH", "REGISTRY",
           "SESSIONS", "SIGN_INS", "SIGN_IN_OUTCOMES", "THROTTLED", "bucket_quantile", "exposition", "figures",
           "register_collector", "unregister_collector"]
