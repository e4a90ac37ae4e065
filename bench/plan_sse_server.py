"""The plan's draft design of ``/api/v1/dashboard/events``, for bench_sse.py only (never product code).

Each SSE client opens its own Redis subscription to ``dashboard:{municipality}``
and filters every message in Python: JSON-parse it, drop sensitive flags and
gbv, drop other wards for a councillor. No database lookup (the draft had
none), so it does less per event than OpsDash's hub, which resolves each
ticket in the database. Same SSE output as OpsDash (``data.event_stream.sse_frame``).

    python bench/plan_sse_server.py PORT REDIS_URL
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402
import tornado.ioloop  # noqa: E402
import tornado.iostream  # noqa: E402
import tornado.web  # noqa: E402

from data.event_stream import sse_frame  # noqa: E402

REDIS_URL = sys.argv[2] if len(sys.argv) > 2 else "redis://127.0.0.1:6379/0"
CLIENT_NAME = f"plan-sse-{os.getpid()}"


class PlanEvents(tornado.web.RequestHandler):
    closed = False

    async def get(self) -> None:
        municipality = self.get_argument("municipality")
        role, ward = self.get_argument("role"), self.get_argument("ward", None)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        client = aioredis.Redis.from_url(REDIS_URL, client_name=CLIENT_NAME)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"dashboard:{municipality}")
        try:
            self.write(sse_frame("connected", {"status": "connected", "municipality_id": municipality}))
            await self.flush()
            # listen() blocks on the socket until a message comes (get_message(timeout=...) measured p50 4.7 s
            # at 100 clients: it polls). No heartbeats here: at the benchmark's rates the stream is never quiet.
            async for message in pubsub.listen():
                if self.closed:
                    break
                if message.get("type") != "message":
                    continue
                payload = json.loads(message["data"])
                data = payload.get("data") or {}
                if payload.get("is_sensitive") or data.get("is_sensitive"):
                    continue
                if str(data.get("category", "")).strip().lower() == "gbv":
                    continue
                event_ward = payload.get("ward_id") or data.get("ward_id")
                if role == "ward_councillor" and (event_ward is None or event_ward != ward):
                    continue
                self.write(sse_frame(payload["type"], data, str(uuid.uuid4())))
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            await pubsub.aclose()
            await client.aclose()

    def on_connection_close(self) -> None:
        self.closed = True


class Alive(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish("ok")


async def main() -> None:
    app = tornado.web.Application([(r"/events", PlanEvents), (r"/health", Alive)])
    app.listen(int(sys.argv[1]), address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    tornado.ioloop.IOLoop.current()
    asyncio.run(main())
