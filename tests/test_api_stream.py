"""Event streams of the hub (``data.event_stream``, issue 18): the contract's frames, scoping, resume, slow clients.

A stream is a session of the process's hub: these tests drive ``EventStream``
against a started hub on the in-process bus (the server tests use Redis) and a
real database, which decides every event's municipality, ward and sensitivity.
"""
from __future__ import annotations

import asyncio
import json
import uuid

from data.event_stream import HEARTBEAT, EventStream
from data.events import InProcessBus, channel_for
from data.scope import Scope

from .helpers.api import parse_sse
from .helpers.live import add_ticket, drop_connection, fresh_municipality, run, started_hub, ticketing_message, until


def scopes(muni: uuid.UUID) -> dict[str, Scope]:
    return {"manager": Scope(municipality_id=muni, role="manager", username="m"),
            "w1": Scope(municipality_id=muni, role="ward_councillor", ward_id="W1", username="c1"),
            "w2": Scope(municipality_id=muni, role="ward_councillor", ward_id="W2", username="c2")}


async def publish(bus, muni, message) -> None:
    await bus.publish(channel_for(muni), json.dumps(message))


async def read(stream: EventStream, want: int, timeout: float = 10) -> list:
    """At least ``want`` events from ``stream`` (heartbeats skipped)."""
    events: list = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(events) < want:
        assert asyncio.get_running_loop().time() < deadline, f"only {events}"
        events += parse_sse(await stream.next(0.2))[0]
    return events


def test_a_stream_starts_with_connected_then_sends_each_allowed_event_as_type_data_and_id(engine):
    muni = fresh_municipality()
    in_w1, in_w2, no_ward = (add_ticket(engine, muni, ward) for ward in ("W1", "W2", None))
    sensitive = add_ticket(engine, muni, "W1", sensitive=True)
    bus = InProcessBus()

    async def scenario():
        async with started_hub(bus, engine=engine) as hub:
            streams = {name: EventStream(hub, scope) for name, scope in scopes(muni).items()}
            heads = {name: parse_sse(stream.open()) for name, stream in streams.items()}
            for name, (events, _) in heads.items():
                assert [(e.event, e.json) for e in events] == [
                    ("connected", {"status": "connected", "municipality_id": str(muni)})], name
            await publish(bus, muni, ticketing_message("ticket_created", "W1", in_w1["tracking_number"], status="open"))
            await publish(bus, muni, ticketing_message("ticket_updated", "W2", in_w2["tracking_number"]))
            await publish(bus, muni, ticketing_message("sla_breach", None, no_ward["tracking_number"]))
            await publish(bus, muni, ticketing_message("ticket_created", "W1", "NOT-IN-DB"))  # unresolved: no councillor
            await publish(bus, muni, ticketing_message("ticket_updated", "W1", sensitive["tracking_number"]))
            await publish(bus, muni, ticketing_message("ticket_created", "W1", in_w1["tracking_number"], category="GBV"))
            await publish(bus, muni, ticketing_message("ticket_updated", "W1", in_w2["tracking_number"]))  # lies: W2's
            await publish(bus, muni, ticketing_message("assignment_changed", "W1", in_w1["tracking_number"]))
            got = {"manager": await read(streams["manager"], 6)}
            got["w1"] = await read(streams["w1"], 2)
            got["w2"] = await read(streams["w2"], 1)
            await asyncio.sleep(0.3)
            for name, stream in streams.items():  # nothing else arrives
                assert parse_sse(await stream.next(0.05))[0] == [], name
                stream.close()
            assert hub.session_count == 0
            return got

    got = run(scenario())
    seen = {name: [(e.event, e.json["tracking_number"]) for e in events] for name, events in got.items()}
    assert seen["manager"] == [("ticket_created", in_w1["tracking_number"]), ("ticket_updated", in_w2["tracking_number"]),
                               ("sla_breach", no_ward["tracking_number"]), ("ticket_created", "NOT-IN-DB"),
                               ("ticket_updated", in_w2["tracking_number"]),
                               ("assignment_changed", in_w1["tracking_number"])]
    assert seen["w1"] == [("ticket_created", in_w1["tracking_number"]), ("assignment_changed", in_w1["tracking_number"])]
    assert seen["w2"] == [("ticket_updated", in_w2["tracking_number"])]  # not the one that claimed W1
    first = got["manager"][0]
    assert first.json == {"tracking_number": in_w1["tracking_number"], "category": "water", "status": "open"}
    ids = [e.id for e in got["manager"]]
    assert len(set(ids)) == len(ids) and all(ids)


def test_last_event_id_resumes_with_exactly_the_missed_allowed_events_or_says_resync(engine):
    muni = fresh_municipality()
    in_w1, in_w2 = add_ticket(engine, muni, "W1"), add_ticket(engine, muni, "W2")
    bus = InProcessBus()

    async def scenario():
        async with started_hub(bus, engine=engine, replay_size=5) as hub:
            councillor = EventStream(hub, scopes(muni)["w1"])
            councillor.open()
            await publish(bus, muni, ticketing_message("ticket_created", "W1", in_w1["tracking_number"]))
            last = (await read(councillor, 1))[-1].id
            councillor.close()
            assert hub.session_count == 0
            for kind in ("ticket_updated", "sla_breach"):  # while disconnected: kept for the municipality
                await publish(bus, muni, ticketing_message(kind, "W2", in_w2["tracking_number"]))
                await publish(bus, muni, ticketing_message(kind, "W1", in_w1["tracking_number"]))
            await until(lambda: hub.replay.snapshot()["last"] >= 5, what="routed while nobody listens")
            again = EventStream(hub, scopes(muni)["w1"], last_event_id=last)
            resumed = parse_sse(again.open())[0]
            again.close()
            garbage = [parse_sse(EventStream(hub, scopes(muni)["w1"], last_event_id=bad).open())[0]
                       for bad in ("0000-1", last.split("-")[0] + "-999999", "x" * 500, "\u202e1-1")]
            for _ in range(5):  # the buffer keeps 5: the resume point falls out of it
                await publish(bus, muni, ticketing_message("ticket_updated", "W1", in_w1["tracking_number"]))
            await until(lambda: hub.replay.snapshot()["last"] >= 10, what="five more")
            too_old = parse_sse(EventStream(hub, scopes(muni)["w1"], last_event_id=last).open())[0]
            return resumed, garbage, too_old

    resumed, garbage, too_old = run(scenario())
    assert [e.event for e in resumed] == ["connected", "ticket_updated", "sla_breach"]
    assert all(e.json["tracking_number"] == resumed[1].json["tracking_number"] for e in resumed[1:])
    positions = [int(e.id.rsplit("-", 1)[1]) for e in resumed]
    assert positions[0] < positions[1] < positions[2]  # connected carries the resume point
    for events in [*garbage, too_old]:
        assert [e.event for e in events] == ["connected", "resync"]
        assert events[1].json == {"reason": "unknown_position"}


def test_a_slow_client_gets_resync_instead_of_unbounded_memory_then_carries_on(engine):
    muni = fresh_municipality()
    ticket = add_ticket(engine, muni, None)
    bus = InProcessBus()

    async def scenario():
        async with started_hub(bus, engine=engine) as hub:
            stream = EventStream(hub, scopes(muni)["manager"], queue_size=3)
            stream.open()
            for n in range(20):  # never read meanwhile
                await publish(bus, muni, ticketing_message("ticket_updated", None, ticket["tracking_number"], n=n))
            await until(lambda: stream.feed.overflowed >= 17, what="the queue to overflow")
            assert len(stream.feed) == 3
            behind = parse_sse(await stream.next(0.1))[0]
            await publish(bus, muni, ticketing_message("ticket_updated", None, ticket["tracking_number"], n=99))
            after = await read(stream, 1)
            stream.close()
            return behind, after

    behind, after = run(scenario())
    assert [(e.event, e.json) for e in behind] == [("resync", {"reason": "missed_events"})]
    assert [(e.event, e.json["n"]) for e in after] == [("ticket_updated", 99)]


def test_quiet_streams_get_heartbeats_and_a_lost_bus_means_resync(engine):
    muni = fresh_municipality()
    bus = InProcessBus()

    async def scenario():
        async with started_hub(bus, engine=engine) as hub:
            stream = EventStream(hub, scopes(muni)["w2"])
            stream.open()
            beat = await stream.next(0.05)
            drop_connection(bus)
            await until(lambda: hub.counters["connects"] >= 2 and hub.status == "live", what="reconnect")
            after = parse_sse(await stream.next(1))[0]
            position = after[0].id
            stream.close()
            # A resume from before the reconnect cannot know what was lost meanwhile.
            return beat, after, position, hub.replay.since(scopes(muni)["w2"], position)

    beat, after, position, since = run(scenario())
    assert beat == HEARTBEAT == b": heartbeat\n\n"
    assert [(e.event, e.json) for e in after] == [("resync", {"reason": "missed_events"})]
    assert since == []  # from the resync's own id on, nothing is missing


def test_closing_a_stream_leaves_nothing_in_the_hub_and_wakes_its_writer(engine):
    muni = fresh_municipality()
    bus = InProcessBus()

    async def scenario():
        async with started_hub(bus, engine=engine) as hub:
            streams = [EventStream(hub, scopes(muni)["manager"]) for _ in range(50)]
            for stream in streams:
                stream.open()
            assert hub.session_count == 50
            waiting = asyncio.ensure_future(streams[0].next(30))
            await asyncio.sleep(0.05)
            for stream in streams:
                stream.close()
                stream.close()  # twice: idempotent
            assert await asyncio.wait_for(waiting, 1) == b""
            return hub.session_count, hub.replay.snapshot()

    count, replay = run(scenario())
    assert count == 0 and replay["municipalities"] == 1  # kept a while for reconnects, then freed


def test_events_within_a_stream_tick_go_out_in_one_write_with_one_frame_shared_by_every_stream(engine):
    muni = fresh_municipality()
    ticket = add_ticket(engine, muni, "W1")
    bus = InProcessBus()

    async def scenario():
        async with started_hub(bus, engine=engine, stream_tick_s=0.3) as hub:
            manager, councillor = (EventStream(hub, scopes(muni)[name]) for name in ("manager", "w1"))
            manager.open(), councillor.open()
            loop = asyncio.get_running_loop()
            started = loop.time()
            for n in range(5):
                await publish(bus, muni, ticketing_message("ticket_updated", "W1", ticket["tracking_number"], n=n))
            await until(lambda: len(manager.feed) == 5, what="five queued events")
            assert not manager.feed.ready.is_set()  # queued, not yet woken: the tick has not come
            chunk = await manager.next(5)
            waited = loop.time() - started
            other = await councillor.next(5)
            manager.close(), councillor.close()
            return chunk, other, waited

    chunk, other, waited = run(scenario())
    assert [e.json["n"] for e in parse_sse(chunk)[0]] == [0, 1, 2, 3, 4]  # five events, one write
    assert chunk == other  # the same bytes for both: each frame is made once
    assert 0.25 <= waited < 3
