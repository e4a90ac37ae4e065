"""The app bench_live.py serves: a session with the real live wiring, measuring delivery.

Each session gets what a dashboard session gets from issue 3 (DashboardStore,
LiveFeed, ``attach_live`` with the process hub) but not the KPI/chart/table
views, so the figures are those of the live path. Every event drained into
every 10th session's feed is timed against the ``sent_at`` its publisher put
in it (every session is counted); the
process writes a latency histogram and per-session counts to
``$BENCH_STATS_PATH`` twice a second.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid

import panel as pn

from components.live_feed import LiveFeed
from components.store import DashboardStore
from dashboard_app import live
from dashboard_app.settings import get_engine
from data.scope import Scope

BUCKET_MS = 1
BUCKETS = 20_000  # 0..20 s in 1 ms buckets


class Probe:
    """Process-wide: one per server process, shared by its sessions."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.histogram = [0] * BUCKETS
        self.per_session: dict[str, int] = {}
        self.created = 0
        threading.Thread(target=self._writer, daemon=True).start()

    def record(self, key: str, events, timed: bool) -> None:
        now = time.time()
        with self.lock:
            if timed:
                for event in events:
                    sent = event.data.get("sent_at")
                    if isinstance(sent, float):
                        self.histogram[min(BUCKETS - 1, int((now - sent) * 1000 / BUCKET_MS))] += 1
            self.per_session[key] = self.per_session.get(key, 0) + len(events)

    def _writer(self) -> None:
        while True:
            with self.lock:
                snapshot = {"histogram": list(self.histogram), "per_session": dict(self.per_session),
                            "registered": live.live_snapshot()["sessions"], "pid": os.getpid(),
                            "loaded": sum(1 for connected in list(pn.state._connected.values()) if connected),
                            "hub": live.live_snapshot()["hub"]}
            tmp = f"{self.path}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(snapshot, handle)
            os.replace(tmp, self.path)
            time.sleep(0.5)


# Sessions re-run this file; the probe must exist once per process.
if "opsdash_bench_probe" not in sys.modules:
    sys.modules["opsdash_bench_probe"] = Probe(os.environ["BENCH_STATS_PATH"])  # type: ignore[assignment]
probe: Probe = sys.modules["opsdash_bench_probe"]  # type: ignore[assignment]
scope = Scope(municipality_id=os.environ["BENCH_MUNICIPALITY"], role="manager", username="bench")
store = DashboardStore(scope=scope, engine=get_engine())
feed = LiveFeed(store=store)
key = uuid.uuid4().hex
# Latency from every 10th session (the probe's own cost stays small); counts from all.
probe.created += 1
timed = probe.created % 10 == 1
original_add = feed.add


def timed_add(events) -> None:
    events = list(events)
    probe.record(key, events, timed)
    original_add(events)


feed.add = timed_add  # type: ignore[method-assign]
live.attach_live(store, feed)
pn.Column(feed).servable()
