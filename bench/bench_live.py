"""Live events at scale: 2 server processes x S sessions, R events/s for T s through Redis.

Prints per-process publish-to-session latency p50/p95/p99 (publish on Redis
to the session's drain callback taking the event into its feed), events
delivered vs expected per session, Redis subscriber connections per process
(CLIENT LIST) and CPU per process while publishing.

    python bench/bench_live.py [--quick] [--sessions S] [--rate R] [--seconds T] [--interval-ms MS]

Needs PostgreSQL and Redis (docs/architecture.md, "Services in development and CI"). Targets (issue 3) at
S=200, R=500: 100% delivered, p95 <= interval + 100 ms, 1 subscriber per process.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OPSDASH_FAST_PASSWORD_HASH", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bench_seed import DEFAULT_PG_URL, throwaway_database  # noqa: E402
from data.events import channel_for  # noqa: E402
from data.models import Ticket  # noqa: E402
from data.seed import seed  # noqa: E402
from data.tickets import visible_ticket  # noqa: E402

REDIS_URL = os.environ.get("OPSDASH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
APP = ROOT / "bench" / "live_bench_app.py"
SESSION_KEY = uuid.uuid4().hex + uuid.uuid4().hex  # Bokeh wants at least 32 bytes


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BenchServer:
    def __init__(self, database_url: str, municipality_id: str, interval_ms: int, workdir: Path) -> None:
        self.port = free_port()
        self.stats_path = workdir / f"stats-{self.port}.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDASH_")}
        # Sessions are signed (issue 15): both servers and the bench's websocket clients share this key.
        env.update(BOKEH_SIGN_SESSIONS="true", BOKEH_SECRET_KEY=SESSION_KEY)
        env.update(OPSDASH_DATABASE_URL=database_url, OPSDASH_REDIS_URL=REDIS_URL,
                   OPSDASH_LIVE_INTERVAL_MS=str(interval_ms), BENCH_MUNICIPALITY=municipality_id,
                   BENCH_STATS_PATH=str(self.stats_path), PYTHONPATH=str(ROOT))
        self.log = open(workdir / f"server-{self.port}.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, *(["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"] + f".{self.port}"]
                               if os.environ.get("BENCH_PROFILE") else []), "-m", "panel", "serve", str(APP), "--port", str(self.port), "--address", "127.0.0.1",
             "--allow-websocket-origin", f"127.0.0.1:{self.port}", "--liveness"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/live_bench_app"
        self.liveness = f"http://127.0.0.1:{self.port}/liveness"  # answers without creating a session

    def stats(self) -> dict:
        try:
            return json.loads(self.stats_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # a clean exit (a profile, if asked for, is written)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_live: timed out waiting for {what}")
        time.sleep(0.2)


class SessionHolders:
    """Websocket sessions that read (and drop) everything the server sends, as a browser tab would.

    Bokeh's Python client does not read once the document is pulled, so its
    socket fills and the server's sends stall; these read continuously at the
    cost of a few bytes of parsing, leaving the CPU to the servers.
    """

    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self.connections: list = []
        self.failures: list[str] = []
        self.opening = asyncio.Semaphore(8)
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _hold(self, ws_url: str) -> None:
        from bokeh.util.token import generate_jwt_token, generate_session_id
        from tornado.websocket import websocket_connect

        async with self.opening:  # a few at a time: a server builds one document per connect
            for _attempt in range(5):
                token = generate_jwt_token(generate_session_id(secret_key=SESSION_KEY, signed=True),
                                           secret_key=SESSION_KEY, signed=True)
                try:
                    connection = await websocket_connect(ws_url, subprotocols=["bokeh", token],
                                                         max_message_size=2**26, connect_timeout=120)
                    break
                except Exception as exc:  # retried: a starved server may time a connect out
                    self.failures.append(repr(exc))
            else:
                return
        self.connections.append(connection)
        await self._document_ready(connection)
        while await connection.read_message() is not None:
            pass

    @staticmethod
    async def _document_ready(connection) -> None:
        """Tell the server the page has loaded, as BokehJS does once it has rendered a document.

        Panel applies a session's changes directly only after this event; before
        it, each change is queued as a callback of its own (what a tab that never
        finished loading costs, not what an open dashboard costs).
        """
        import json

        for _frame in range(3):  # the server's ACK (header, metadata, content): the session exists
            await connection.read_message()
        event = {"kind": "MessageSent", "msg_type": "bokeh_event",
                 "msg_data": {"type": "event", "name": "document_ready", "values": {"type": "map"}}}
        for part in ({"msgid": uuid.uuid4().hex, "msgtype": "PATCH-DOC"}, {}, {"events": [event]}):
            await connection.write_message(json.dumps(part))

    def open(self, ws_url: str, count: int) -> None:
        import asyncio

        for _ in range(count):
            asyncio.run_coroutine_threadsafe(self._hold(ws_url), self.loop)

    def close(self) -> None:
        for connection in list(self.connections):
            self.loop.call_soon_threadsafe(connection.close)


def open_sessions(servers: list[BenchServer], per_server: int) -> SessionHolders:
    import requests

    wait(lambda: all(_answers(requests, s.liveness) for s in servers), 90, "the servers to start")
    holders = SessionHolders()
    for server in servers:
        holders.open(server.url.replace("http://", "ws://") + "/ws", per_server)
    wait(lambda: all(s.stats().get("registered", 0) >= per_server for s in servers), 300,
         "every session to register with its process's hub")
    wait(lambda: all(s.stats().get("loaded", 0) >= per_server for s in servers), 120,
         "every session to report its page loaded")
    return holders


def _answers(requests, url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def publish(municipality_id: str, tickets: list[tuple[str, str, str | None]], rate: int, seconds: float) -> int:
    """R events/s in 10 ms slices; each carries its send time for the latency figure.

    Each event names a real ticket (id, tracking number, ward) as the ticketing system's
    would: the hub resolves every name in the database and drops what does not agree.
    """
    client = redis.Redis.from_url(REDIS_URL)
    channel = channel_for(municipality_id)
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - sent
        if due > 0:
            pipe = client.pipeline(transaction=False)
            for _ in range(due):
                ticket_id, tracking_number, ward = tickets[sent % len(tickets)]
                message = {"type": "ticket_updated", "ward_id": ward, "ticket_id": ticket_id,
                           "data": {"tracking_number": tracking_number, "category": "water", "status": "in_progress",
                                    "sent_at": time.time()}}
                pipe.publish(channel, json.dumps(message))
                sent += 1
            pipe.execute()
        time.sleep(0.005)
    client.close()
    return sent


def percentile(histogram: list[int], q: float) -> float:
    total = sum(histogram)
    if total == 0:
        return float("nan")
    target, running = q * total, 0
    for ms, count in enumerate(histogram):
        running += count
        if running >= target:
            return float(ms)
    return float(len(histogram))


def subscribers_per_process(servers: list[BenchServer]) -> dict[int, int]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        names = [c.get("name", "") for c in client.client_list(_type="pubsub")]
    finally:
        client.close()
    return {s.process.pid: names.count(f"opsdash-hub-{s.process.pid}") for s in servers}


def run(sessions_per_server: int, rate: int, seconds: float, interval_ms: int, pg_url: str) -> int:
    with throwaway_database(pg_url) as engine, tempfile.TemporaryDirectory() as tmp:
        result = seed(engine, tickets=500, wards=4, municipalities=1, random_seed=5)
        muni = result.municipalities[0]
        with engine.connect() as conn:
            # Visible tickets only (the scope gate's own rule), named as they are stored.
            tickets = [(str(i), n, w) for i, n, w in conn.execute(
                select(Ticket.id, Ticket.tracking_number, Ticket.ward_id).where(visible_ticket()))]
        servers = [BenchServer(str(engine.url.render_as_string(hide_password=False)), muni["id"], interval_ms,
                               Path(tmp)) for _ in range(2)]
        try:
            clients = open_sessions(servers, sessions_per_server)
            procs = [psutil.Process(s.process.pid) for s in servers]
            me = psutil.Process()
            cpu_before = [p.cpu_times() for p in procs]
            me_before = me.cpu_times()
            wall = time.monotonic()
            sent = publish(muni["id"], tickets, rate, seconds)
            publish_wall = time.monotonic() - wall
            cpu_after = [p.cpu_times() for p in procs]
            me_after = me.cpu_times()
            load = os.getloadavg()[0]

            def all_delivered() -> bool:
                return all(sum(s.stats().get("per_session", {}).values()) >= sent * sessions_per_server
                           for s in servers)

            try:
                wait(all_delivered, 15 + 4 * interval_ms / 1000, "delivery to finish")
            except SystemExit:
                pass  # report what arrived
            time.sleep(1.0)  # one more stats write
            subscribers = subscribers_per_process(servers)
            print(f"2 processes x {sessions_per_server} sessions, {rate} events/s for {seconds:.0f} s "
                  f"({sent} events published), interval {interval_ms} ms, machine: {os.cpu_count()} cores, "
                  f"load average {load:.1f}; this client (publisher + {2 * sessions_per_server} websocket readers) "
                  f"CPU {(me_after.user + me_after.system - me_before.user - me_before.system) / publish_wall * 100:.0f}%")
            ok = True
            for server, before, after in zip(servers, cpu_before, cpu_after):
                stats = server.stats()
                hist = stats.get("histogram", [0])
                per_session = list(stats.get("per_session", {}).values())
                cpu = (after.user + after.system - before.user - before.system) / publish_wall * 100
                p50, p95, p99 = (percentile(hist, q) for q in (0.50, 0.95, 0.99))
                delivered = sum(per_session)
                expected = sent * sessions_per_server
                print(f"  process {server.process.pid}: latency p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms; "
                      f"delivered {delivered}/{expected} ({100 * delivered / max(1, expected):.2f}%), "
                      f"per session min {min(per_session, default=0)} max {max(per_session, default=0)}; "
                      f"Redis subscribers {subscribers.get(server.process.pid)}; CPU {cpu:.0f}% of one core")
                print(f"    hub: {json.dumps(stats.get('hub', {}))}")
                ok &= delivered == expected and subscribers.get(server.process.pid) == 1
                ok &= p95 <= interval_ms + 100
            print(f"  targets (100% delivered, p95 <= {interval_ms + 100} ms, 1 subscriber/process): "
                  f"{'met' if ok else 'NOT met'}")
            clients.close()
        finally:
            for server in servers:
                server.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 sessions per process, 50 events/s for 5 s")
    parser.add_argument("--sessions", type=int, default=200, help="sessions per process")
    parser.add_argument("--rate", type=int, default=500, help="events per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--interval-ms", type=int, default=500)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.rate, args.seconds = 20, 50, 5
    return run(args.sessions, args.rate, args.seconds, args.interval_ms, args.pg_url)


if __name__ == "__main__":
    raise SystemExit(main())
