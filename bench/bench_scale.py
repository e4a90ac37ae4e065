"""Figures for "From one host to a metro" (docs/deployment.md): Redis Pub/Sub capacity, the read replica's cost.

- PUBLISH/s one Redis takes with S pattern subscribers (``dashboard:*``, as each OpsDash
  process holds one), measured by ``redis-benchmark`` on a private server; the same on one
  node of a 3-master Redis Cluster (it forwards every message to every other node);
- the read replica: what ``ReadRoute.engine()`` adds to a read (primary position + replica
  position), and how long a committed write takes to be replayed on a streaming replica.

Private servers on loopback ports (tests/helpers), removed at the end. ``--quick``: fewer messages.
Run: ``python bench/bench_scale.py [--quick]``.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.db import make_engine  # noqa: E402
from data.replica import ReadRoute  # noqa: E402
from tests.helpers.pg_replica import primary_and_replica  # noqa: E402
from tests.helpers.redis_servers import redis_cluster, start_redis  # noqa: E402

PAYLOAD = '{"type":"ticket_updated","ward_id":"ETH-W001","data":{"tracking_number":"ETH-1","status":"open"}}'


def publish_rate(port: int, messages: int, subscribers: int) -> float:
    """PUBLISH/s from redis-benchmark (50 clients, pipelines of 16) while ``subscribers`` redis-cli read every message."""
    readers = [subprocess.Popen(["redis-cli", "-p", str(port), "psubscribe", "dashboard:*"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(subscribers)]
    try:
        time.sleep(0.5)
        out = subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(messages), "-P", "16", "-q",
                              "PUBLISH", "dashboard:bench", PAYLOAD], capture_output=True, text=True, timeout=300)
        found = re.findall(r"([\d.]+) requests per second", out.stdout)
        return float(found[-1]) if found else float("nan")
    finally:
        for reader in readers:
            reader.kill()
            reader.wait()


def redis_figures(folder: Path, messages: int) -> None:
    server = start_redis(folder / "single")
    try:
        for subscribers in (1, 10, 50):
            print(f"one Redis, {subscribers:>2} subscribers: {publish_rate(server.port, messages, subscribers):>10,.0f} "
                  "PUBLISH/s", flush=True)
    finally:
        server.stop()
    with redis_cluster(folder / "cluster", masters=3, replicas=0) as cluster:
        node = cluster.nodes[0]
        for subscribers in (1, 10):
            print(f"Redis Cluster (3 masters), publishing on one node, {subscribers:>2} subscribers on it: "
                  f"{publish_rate(node.port, messages, subscribers):>10,.0f} PUBLISH/s", flush=True)


def replica_figures(rounds: int) -> None:
    with primary_and_replica() as servers:
        primary, replica = make_engine(servers.primary.url()), make_engine(servers.replica.url())
        try:
            with primary.begin() as connection:
                connection.execute(text("CREATE TABLE IF NOT EXISTS bench_marks (id uuid PRIMARY KEY)"))
            servers.wait_replayed()
            route = ReadRoute(primary, replica)
            route.engine()  # connections opened
            costs, delays = [], []
            for _ in range(rounds):
                started = time.perf_counter()
                assert route.engine() is replica
                costs.append((time.perf_counter() - started) * 1000)
                mark = uuid.uuid4()
                with primary.begin() as connection:
                    connection.execute(text("INSERT INTO bench_marks VALUES (:id)"), {"id": mark})
                started = time.perf_counter()
                with replica.connect() as connection:
                    while connection.execute(text("SELECT 1 FROM bench_marks WHERE id = :id"), {"id": mark}).first() is None:
                        connection.rollback()
                        time.sleep(0.0005)
                delays.append((time.perf_counter() - started) * 1000)
            print(f"ReadRoute.engine() with a caught-up replica: median {statistics.median(costs):.2f} ms, "
                  f"worst {max(costs):.2f} ms ({rounds} reads)", flush=True)
            print(f"commit on the primary -> visible on the replica: median {statistics.median(delays):.2f} ms, "
                  f"worst {max(delays):.2f} ms ({rounds} writes)", flush=True)
        finally:
            primary.dispose()
            replica.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        print("redis-server / redis-benchmark not installed: Redis figures skipped")
    else:
        with tempfile.TemporaryDirectory(prefix="opsdash-bench-redis-") as folder:
            redis_figures(Path(folder), 20_000 if args.quick else 200_000)
    replica_figures(20 if args.quick else 200)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
