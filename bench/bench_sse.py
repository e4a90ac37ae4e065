"""SSE at scale (issue 18, point 5): OpsDash's hub against the plan's one-subscription-per-client design, one harness.

One server process, C event-stream clients (a mix of councillors of W wards
and managers, each with its own API token), R events/s for T s published on
Redis as the ticketing system does, each naming a real ticket of a random
ward. Run twice in one go: ``opsdash serve`` (``/api/v1/dashboard/events``, one
Redis subscription per process, routing by the hub) and
``bench/plan_sse_server.py`` (each client its own Redis subscription, filtering
in Python). Prints for each: events delivered / expected (every eligible client
must get every event), publish-to-client latency p50/p95/p99, the server's
peak RSS, its CPU per delivered event, and its Redis subscriber connections.
``--limit`` then raises the event rate on OpsDash alone until p95 crosses 1 s.

    python bench/bench_sse.py [--quick] [--clients C] [--wards W] [--managers-share F] [--rate R]
                              [--seconds T] [--limit] [--only opsdash|plan]

Needs PostgreSQL and Redis. The clients are asyncio sockets in this process
(HTTP/1.0, so no chunk framing to parse); on a 2-core machine they share the
cores with the server, which the figures include (this process's CPU is printed).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPSDASH_FAST_PASSWORD_HASH", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bench_seed import DEFAULT_PG_URL, throwaway_database  # noqa: E402
from data.api_tokens import create_token  # noqa: E402
from data.events import channel_for  # noqa: E402
from data.models import Ticket  # noqa: E402
from data.seed import seed  # noqa: E402
from data.tickets import visible_ticket  # noqa: E402
from tests.helpers.servers import OpsDashServer, free_port  # noqa: E402

REDIS_URL = os.environ.get("OPSDASH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Client:
    role: str
    ward: str | None
    token: str
    received: int = 0
    connected: bool = False
    ended: bool = False


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    late_after_window: int = 0


async def read_stream(host: str, port: int, path: str, headers: dict[str, str], client: Client, run: Run) -> None:
    """One SSE client: HTTP/1.0 (the server streams without chunking), events split on blank lines."""
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    except OSError:
        client.ended = True
        return
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n{head}\r\n".encode())
    try:
        status = await reader.readline()
        if b" 200 " not in status:
            client.ended = True
            return
        await reader.readuntil(b"\r\n\r\n")
        while True:
            block = await reader.readuntil(b"\n\n")
            now = time.time()
            if block.startswith(b"event: connected"):
                client.connected = True
                continue
            start = block.find(b"\ndata: ")
            if start < 0:
                continue  # a heartbeat comment, or retry:
            end = block.find(b"\n", start + 7)
            data = json.loads(block[start + 7:end])
            if "sent_at" in data:
                client.received += 1
                run.latencies_ms.append((now - data["sent_at"]) * 1000)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        client.ended = True
        writer.close()


def publish(municipality_id: str, tickets: list[tuple[str, str]], rate: int, seconds: float,
            counts: dict[str | None, int], rng: random.Random) -> int:
    """R events/s in 10 ms slices, each naming a real ticket (tracking number, ward) and carrying its send time."""
    client = redis.Redis.from_url(REDIS_URL)
    channel = channel_for(municipality_id)
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - sent
        if due > 0:
            pipe = client.pipeline(transaction=False)
            for _ in range(due):
                tracking_number, ward = rng.choice(tickets)
                counts[ward] = counts.get(ward, 0) + 1
                message = {"type": "ticket_updated", "ward_id": ward,
                           "data": {"tracking_number": tracking_number, "category": "water",
                                    "status": "in_progress", "sent_at": time.time()}}
                pipe.publish(channel, json.dumps(message))
                sent += 1
            pipe.execute()
        time.sleep(0.005)
    client.close()
    return sent


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def subscriber_connections(prefix: str, pids: set[int]) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        names = [c.get("name", "") for c in client.client_list(_type="pubsub")]
    finally:
        client.close()
    return sum(1 for n in names if n.startswith(prefix) and n.rsplit("-", 1)[-1].isdigit()
               and int(n.rsplit("-", 1)[-1]) in pids)


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_flag = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree(self.pid)))
            except psutil.Error:
                pass
            time.sleep(0.5)


def measure(design: str, port: int, pid: int, clients: list[Client], paths: list[tuple[str, dict]],
            municipality_id: str, tickets: list[tuple[str, str]], rate: int, seconds: float,
            prefix: str) -> dict:
    """Connect every client, publish, wait for delivery; the figures of one design at one rate."""
    run = Run()
    loop = asyncio.new_event_loop()
    tasks: list[asyncio.Task] = []

    async def connect_all() -> None:
        gate = asyncio.Semaphore(50)

        async def one(client: Client, path: str, headers: dict) -> None:
            async with gate:
                task = loop.create_task(read_stream("127.0.0.1", port, path, headers, client, run))
                tasks.append(task)
                deadline = time.monotonic() + 60
                while not client.connected and not client.ended and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(one(c, p, h) for c, (p, h) in zip(clients, paths)))

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(connect_all(), loop).result(300)
    connected = sum(c.connected for c in clients)
    sampler = RssSampler(pid)
    sampler.start()
    procs = tree(pid)
    me = psutil.Process()
    redis_connections = subscriber_connections(prefix, {p.pid for p in procs})
    counts: dict[str | None, int] = {}
    cpu_before, me_before, wall = cpu_seconds(procs), cpu_seconds([me]), time.monotonic()
    sent = publish(municipality_id, tickets, rate, seconds, counts, random.Random(7))
    # Every eligible client gets every event: a manager all of them, a councillor those of their ward.
    expected = sum(sent if c.role != "ward_councillor" else counts.get(c.ward, 0) for c in clients if c.connected)
    deadline = time.monotonic() + 30
    while sum(c.received for c in clients) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    elapsed = time.monotonic() - wall
    cpu = cpu_seconds(procs) - cpu_before
    me_cpu = cpu_seconds([me]) - me_before
    sampler.stop_flag.set()
    delivered = sum(c.received for c in clients)
    for task in tasks:
        loop.call_soon_threadsafe(task.cancel)
    time.sleep(0.5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    return {"design": design, "clients": len(clients), "connected": connected, "rate": rate, "seconds": seconds,
            "sent": sent, "expected": expected, "delivered": delivered,
            "p50": percentile(run.latencies_ms, 0.50), "p95": percentile(run.latencies_ms, 0.95),
            "p99": percentile(run.latencies_ms, 0.99), "peak_rss_mb": sampler.peak / 2**20,
            "cpu_s": cpu, "cpu_us_per_delivery": cpu / max(delivered, 1) * 1e6, "wall_s": elapsed,
            "bench_cpu_s": me_cpu, "redis_connections": redis_connections}


def show(figures: dict) -> None:
    f = figures
    print(f"  {f['design']:<8} {f['connected']}/{f['clients']} clients, {f['rate']} events/s x {f['seconds']:.0f} s "
          f"({f['sent']} events): delivered {f['delivered']}/{f['expected']} "
          f"({100 * f['delivered'] / max(1, f['expected']):.2f}%); latency p50 {f['p50']:.0f} ms, "
          f"p95 {f['p95']:.0f} ms, p99 {f['p99']:.0f} ms; peak RSS {f['peak_rss_mb']:.0f} MB; "
          f"server CPU {f['cpu_s']:.1f} s = {f['cpu_us_per_delivery']:.1f} us per delivered event; "
          f"Redis subscriber connections {f['redis_connections']}; bench client CPU {f['bench_cpu_s']:.1f} s",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 clients of 10 wards, 20 events/s for 10 s")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--wards", type=int, default=50)
    parser.add_argument("--managers-share", type=float, default=0.2, help="share of clients that are managers")
    parser.add_argument("--rate", type=int, default=50, help="events per second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--limit", action="store_true", help="then raise the rate on OpsDash until p95 > 1 s")
    parser.add_argument("--only", choices=("opsdash", "plan"), default=None)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.wards, args.rate, args.seconds = 100, 10, 20, 10
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the clients' sockets (and the servers', inherited)
    managers = round(args.clients * args.managers_share)
    with throwaway_database(args.pg_url) as engine, tempfile.TemporaryDirectory() as tmp:
        result = seed(engine, tickets=max(2000, args.wards * 40), wards=args.wards, municipalities=1, random_seed=5)
        muni = result.municipalities[0]
        with engine.connect() as conn:
            tickets = [(n, w) for n, w in conn.execute(select(Ticket.tracking_number, Ticket.ward_id)
                                                       .where(visible_ticket(), Ticket.tenant_id == muni["id"]))]
        manager = next(u for u in result.users if u["role"] == "manager")["username"]
        councillors = {u["ward_id"]: u["username"] for u in result.users if u["role"] == "ward_councillor"}
        wards = sorted(councillors)
        clients = [Client("manager", None, create_token(engine, manager, f"bench-{i}")[1]) for i in range(managers)]
        clients += [Client("ward_councillor", wards[i % len(wards)],
                           create_token(engine, councillors[wards[i % len(wards)]], f"bench-{i}")[1])
                    for i in range(args.clients - managers)]
        url = engine.url.render_as_string(hide_password=False)
        print(f"{args.clients} clients ({managers} managers, {args.clients - managers} councillors of {len(wards)} "
              f"wards), {args.rate} events/s for {args.seconds:.0f} s; machine {os.cpu_count()} cores", flush=True)
        results = []
        if args.only in (None, "opsdash"):
            server = OpsDashServer(database_url=url, redis_url=REDIS_URL, log_dir=Path(tmp), env={
                "OPSDASH_API_RATE_PER_MINUTE": "100000", "OPSDASH_LOG_LEVEL": "WARNING"})
            server.start(timeout=120)
            try:
                paths = [("/api/v1/dashboard/events", {"Authorization": f"Bearer {c.token}"}) for c in clients]
                figures = measure("opsdash", server.port, server.process.pid, clients, paths, muni["id"], tickets,
                                  args.rate, args.seconds, "opsdash-hub-")
                show(figures)
                results.append(figures)
                if args.limit:
                    for rate in (100, 200, 400, 800, 1600):
                        fresh = [Client(c.role, c.ward, c.token) for c in clients]
                        step = measure("opsdash", server.port, server.process.pid, fresh, paths, muni["id"],
                                       tickets, rate, 15, "opsdash-hub-")
                        show(step)
                        if step["p95"] > 1000 or step["delivered"] < step["expected"]:
                            print(f"  limit: at {args.clients} clients p95 crosses 1 s (or delivery falls short) "
                                  f"between {rate // 2} and {rate} events/s", flush=True)
                            break
            finally:
                server.stop()
        if args.only in (None, "plan"):
            port = free_port()
            log = open(Path(tmp) / "plan.log", "wb")
            plan = subprocess.Popen([sys.executable, str(ROOT / "bench" / "plan_sse_server.py"), str(port), REDIS_URL],
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        import urllib.request

                        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                        break
                    except OSError:
                        time.sleep(0.2)
                fresh = [Client(c.role, c.ward, c.token) for c in clients]
                paths = [(f"/events?municipality={muni['id']}&role={c.role}" + (f"&ward={c.ward}" if c.ward else ""),
                          {}) for c in fresh]
                figures = measure("plan", port, plan.pid, fresh, paths, muni["id"], tickets, args.rate,
                                  args.seconds, "plan-sse-")
                show(figures)
                results.append(figures)
            finally:
                plan.terminate()
                plan.wait(10)
                log.close()
        if len(results) == 2:
            ours, theirs = results
            ratio = theirs["cpu_us_per_delivery"] / max(ours["cpu_us_per_delivery"], 1e-9)
            print(f"  CPU per delivered event: plan / opsdash = {ratio:.1f}x (target >= 5x); Redis connections "
                  f"{ours['redis_connections']} against {theirs['redis_connections']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
