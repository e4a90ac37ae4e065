"""The simulator and the ``opsdash publish`` / ``opsdash simulate`` commands."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from data.events import InProcessBus, parse_event
from data.models import Ticket
from data.simulator import Simulator

from .helpers.live import add_ticket, run, until, wait_until
from .helpers.servers import ROOT


def tickets_by_id(engine, ids) -> dict:
    with Session(engine) as session:
        rows = session.execute(select(Ticket).where(Ticket.id.in_(list(ids)))).scalars().all()
        return {t.id: t for t in rows}


def test_simulator_changes_database_and_events_match_it(engine, make_seed):
    result = make_seed(tickets=300, municipalities=2)
    ids = [uuid.UUID(m["id"]) for m in result.municipalities]
    simulator = Simulator(engine, InProcessBus(), municipality_ids=ids, random_seed=3)
    events = simulator.step(60)
    assert len(events) >= 50  # a few creations may be sensitive and stay silent
    assert {e.type for e in events} >= {"ticket_created", "ticket_updated", "assignment_changed"}
    stored = tickets_by_id(engine, {e.ticket_id for e in events})
    last = {}
    for event in events:
        last[event.ticket_id] = event
    for ticket_id, event in last.items():
        ticket = stored[ticket_id]
        assert ticket.tenant_id == event.municipality_id and ticket.ward_id == event.ward_id
        assert (ticket.status, ticket.tracking_number) == (event.status, event.tracking_number)
        assert not ticket.is_sensitive and ticket.category != "gbv"


def test_simulator_never_announces_sensitive_tickets(engine, make_seed):
    muni = make_seed(tickets=0, municipalities=1).municipalities[0]
    simulator = Simulator(engine, InProcessBus(), municipality_ids=[muni["id"]], sensitive_share=1.0, random_seed=1)
    events = simulator.step(40)  # every ticket it creates is sensitive; updates pick only visible ones
    assert events == []
    assert simulator.refused > 0
    with Session(engine) as session:
        created = session.execute(select(Ticket).where(Ticket.tenant_id == uuid.UUID(muni["id"]))).scalars().all()
    assert created and all(t.category == "gbv" for t in created)


def test_simulator_announces_sla_breach_when_a_deadline_passes(engine, make_seed):
    muni = make_seed(tickets=0, municipalities=1).municipalities[0]
    now = datetime.now(timezone.utc)
    due = add_ticket(engine, muni["id"], muni["wards"][1], response_deadline=now - timedelta(seconds=5))
    hidden = add_ticket(engine, muni["id"], muni["wards"][1], sensitive=True,
                        response_deadline=now - timedelta(seconds=5))
    not_yet = add_ticket(engine, muni["id"], muni["wards"][1], response_deadline=now + timedelta(hours=1))
    simulator = Simulator(engine, InProcessBus(), municipality_ids=[muni["id"]], random_seed=2)
    simulator._breach_checked_at = now - timedelta(minutes=1)
    breaches = [e for e in simulator.step(0, now=now) if e.type == "sla_breach"]
    assert [e.ticket_id for e in breaches] == [due["id"]]
    assert breaches[0].data["breach"] == "response" and breaches[0].status == "escalated"
    stored = tickets_by_id(engine, [due["id"], hidden["id"], not_yet["id"]])
    assert stored[due["id"]].status == "escalated" and stored[due["id"]].escalated_at is not None
    assert stored[not_yet["id"]].status == "open"
    assert simulator.step(0, now=now + timedelta(seconds=1)) == []  # announced once


def test_simulator_run_publishes_at_about_the_rate(engine, make_seed):
    muni = make_seed(tickets=100, municipalities=1).municipalities[0]
    bus = InProcessBus()
    simulator = Simulator(engine, bus, municipality_ids=[muni["id"]], sensitive_share=0.0, random_seed=4)

    async def scenario():
        sub = await bus.subscribe()
        published = await simulator.run(rate=20, duration=1.0, tick=0.1)
        await until(lambda: sub.queue.qsize() >= published, what="every published event")
        received = []
        while not sub.queue.empty():
            channel, raw = sub.queue.get_nowait()
            received.append(parse_event(raw, channel))
        return published, received

    published, received = run(scenario())
    assert 10 <= published <= 30
    assert len(received) == published
    assert all(str(e.municipality_id) == muni["id"] for e in received)


def opsdash(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDASH_")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "dashboard_app.cli", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120, input=stdin)


def test_publish_command_sends_both_shapes_and_refuses_sensitive(pg_url, pg_engine, redis_url):
    muni = str(uuid.uuid4())
    env = {"OPSDASH_DATABASE_URL": pg_url, "OPSDASH_REDIS_URL": redis_url}
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(f"dashboard:{muni}")
    try:
        ok = opsdash("publish", "--municipality", muni, "--type", "ticket_created", "--ward", "W1",
                     "--data", '{"tracking_number": "CLI-1", "category": "water"}', env=env)
        assert ok.returncode == 0, ok.stderr
        shape = json.dumps({"type": "ticket_updated", "data": {"tracking_number": "CLI-2"}, "ward_id": "W2"})
        ok2 = opsdash("publish", "--municipality", muni, "--message", shape, env=env)
        assert ok2.returncode == 0, ok2.stderr
        sensitive = add_ticket(pg_engine, muni, "W1", sensitive=True)
        refused = [
            opsdash("publish", "--municipality", muni, "--type", "ticket_created", "--data", '{"category": "GbV"}',
                    env=env),
            opsdash("publish", "--municipality", muni, "--type", "ticket_updated", "--ticket",
                    str(sensitive["id"]), env=env),
            opsdash("publish", "--municipality", muni, "--message", '{"type": "x"}', env=env),
            opsdash("publish", "--municipality", "not-a-uuid", "--type", "ticket_created", env=env),
            opsdash("publish", "--municipality", muni, "--type", "ticket_created",
                    env={"OPSDASH_DATABASE_URL": pg_url}),
        ]
        for result in refused:
            assert result.returncode == 2 and result.stderr.startswith("opsdash: error:"), result.stderr
            assert "Traceback" not in result.stderr
        assert "sensitive" in refused[0].stderr and "sensitive" in refused[1].stderr
        assert "OPSDASH_REDIS_URL" in refused[4].stderr
        got = []

        def two_received() -> bool:
            message = listener.get_message(timeout=0.1)
            if message is not None:
                got.append(parse_event(message["data"], message["channel"]))
            return len(got) >= 2

        wait_until(two_received, what="the two published events")
        assert listener.get_message(timeout=0.5) is None  # and nothing else: the refused ones never left
        assert [(e.tracking_number, e.ward_id) for e in got] == [("CLI-1", "W1"), ("CLI-2", "W2")]
    finally:
        listener.close()


def test_simulate_command_runs_for_its_duration(pg_url, pg_engine, redis_url, random_seed):
    from data.seed import seed

    muni = seed(pg_engine, tickets=50, wards=2, municipalities=1, random_seed=random_seed).municipalities[0]
    env = {"OPSDASH_DATABASE_URL": pg_url, "OPSDASH_REDIS_URL": redis_url}
    result = opsdash("simulate", "--rate", "10", "--duration", "1.5", "--municipality", muni["id"],
                     "--random-seed", str(random_seed), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("published ") and int(result.stdout.split()[1]) >= 5
    bad = opsdash("simulate", "--rate", "0", "--municipality", muni["id"], env=env)
    assert bad.returncode == 2 and "--rate" in bad.stderr
