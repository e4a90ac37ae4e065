"""The per-process hub on both buses: routing by Scope, drops, bounded queues, reconnects.

Every test runs on the in-process bus and on real Redis (``live_bus``); each
uses fresh municipality ids, so channels never collide with other tests.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from data.events import BusUnavailable, DropReason, RedisBus, channel_for, make_event, publish_event
from data.hub import Hub
from data.scope import Scope

from .helpers.live import (
    add_ticket,
    drop_connection,
    fresh_municipality,
    run,
    started_hub,
    subscriber_connections,
    ticketing_message,
    until,
)


def scopes(muni: uuid.UUID) -> dict[str, Scope]:
    return {
        "manager": Scope(municipality_id=muni, role="manager", username="m"),
        "w1": Scope(municipality_id=muni, role="ward_councillor", ward_id="W1", username="c1"),
        "w2": Scope(municipality_id=muni, role="ward_councillor", ward_id="W2", username="c2"),
    }


async def publish_raw(bus, muni: uuid.UUID, message) -> None:
    await bus.publish(channel_for(muni), message if isinstance(message, str) else json.dumps(message))


def tracking(drained) -> list[str]:
    return [e.tracking_number for e in drained.events]


def test_events_reach_only_sessions_whose_scope_allows_them(live_bus, engine):
    muni, other = fresh_municipality(), fresh_municipality()
    in_w1, in_w2, no_ward = (add_ticket(engine, muni, ward) for ward in ("W1", "W2", None))

    async def scenario():
        async with started_hub(live_bus, engine=engine) as hub:
            feeds = {name: hub.register(scope) for name, scope in scopes(muni).items()}
            stranger = hub.register(Scope(municipality_id=other, role="admin"))
            await publish_raw(live_bus, muni, ticketing_message("ticket_created", "W1", in_w1["tracking_number"]))
            await publish_raw(live_bus, muni, ticketing_message("ticket_updated", "W2", in_w2["tracking_number"],
                                                                ward_in_data=True))
            await publish_raw(live_bus, muni, ticketing_message("ticket_updated", None, no_ward["tracking_number"]))
            last = make_event("sla_breach", muni, ticket_id=in_w1["id"], data={"tracking_number": "last"})
            await publish_raw(live_bus, muni, last.to_dict())  # names ticket in_w1 by id only: W1's
            await until(lambda: len(feeds["manager"]) == 3, what="three events at the manager")
            # "last" names in_w1 by id and by another tracking number: conflicting names, dropped
            # (published last, so once it is counted every event before it has been routed).
            await until(lambda: hub.dropped[DropReason.CONFLICTING_NAMES.value] == 1, what="the conflicting event")
            got = {name: tracking(feed.drain()) for name, feed in feeds.items()}
            numbers = [t["tracking_number"] for t in (in_w1, in_w2, no_ward)]
            assert got == {"manager": numbers, "w1": numbers[:1], "w2": numbers[1:2]}
            assert stranger.drain().events == []  # another municipality never sees them

    run(scenario())


def test_councillor_never_gets_sensitive_or_foreign_events_in_any_form(live_bus, engine):
    muni = fresh_municipality()
    sentinel = add_ticket(engine, muni, "W1")
    forbidden = [
        {**ticketing_message("ticket_created", "W1", "flag-top"), "is_sensitive": True},
        ticketing_message("ticket_created", "W1", "flag-data", is_sensitive=True),
        ticketing_message("ticket_created", "W1", "cat-upper", category="GBV"),
        ticketing_message("ticket_created", "W1", "cat-mixed", category="gBv"),
        ticketing_message("ticket_created", "W2", "other-ward"),
        ticketing_message("ticket_created", None, "no-ward"),
        ticketing_message("ticket_created", "", "empty-ward"),
        {"type": "ticket_created", "municipality_id": str(uuid.uuid4()), "ward_id": "W1",
         "data": {"tracking_number": "forged-muni"}},
        # Names no ticket the database has: a councillor never gets it, whatever ward it claims.
        ticketing_message("ticket_created", "W1", "not-in-the-database"),
        ticketing_message("ticket_created", "W1", sentinel["tracking_number"], category="fire"),  # unknown category
    ]

    async def scenario():
        async with started_hub(live_bus, engine=engine) as hub:
            councillor = hub.register(scopes(muni)["w1"])
            for message in forbidden:
                await publish_raw(live_bus, muni, message)
            await publish_raw(live_bus, muni, ticketing_message("ticket_created", "W1", sentinel["tracking_number"]))
            await until(lambda: len(councillor) >= 1, what="the sentinel")
            assert tracking(councillor.drain()) == [sentinel["tracking_number"]]
            assert hub.dropped[DropReason.SENSITIVE_FLAG.value] >= 2
            assert hub.dropped[DropReason.SENSITIVE_CATEGORY.value] >= 2
            assert hub.dropped[DropReason.WRONG_MUNICIPALITY.value] >= 1
            assert hub.dropped[DropReason.UNKNOWN_CATEGORY.value] == 1

    run(scenario())


def test_event_of_ticket_sensitive_in_database_is_dropped(live_bus, engine, make_seed):
    muni = make_seed(tickets=0, municipalities=1).municipalities[0]
    muni_id, ward = uuid.UUID(muni["id"]), muni["wards"][0]
    flagged = add_ticket(engine, muni_id, ward, sensitive=True, category="roads")
    gbv_unflagged = add_ticket(engine, muni_id, ward, category="GBV")
    visible = add_ticket(engine, muni_id, ward)

    async def scenario():
        async with started_hub(live_bus, engine=engine) as hub:
            manager = hub.register(Scope(municipality_id=muni_id, role="manager"))
            # The ticketing system's own shape may name a ticket only by its tracking number.
            await publish_raw(live_bus, muni_id, ticketing_message("ticket_updated", ward, flagged["tracking_number"]))
            for ticket in (flagged, gbv_unflagged, visible):
                # Harmless-looking messages: only the database knows two of them are sensitive.
                message = {"type": "ticket_updated", "ticket_id": str(ticket["id"]), "ward_id": ward,
                           "data": {"tracking_number": ticket["tracking_number"], "category": "water"}}
                await publish_raw(live_bus, muni_id, message)
            await until(lambda: len(manager) >= 1, what="the visible ticket's event")
            await until(lambda: hub.dropped[DropReason.SENSITIVE_TICKET.value] >= 3, what="three database drops")
            assert tracking(manager.drain()) == [visible["tracking_number"]]

    run(scenario())


def test_flood_of_ten_thousand_bad_messages_leaves_hub_serving_good_ones(live_bus):
    muni = fresh_municipality()
    bad = ["{oops", "[]", '{"type": "nope"}', '{"data": {}}', '{"type": "ticket_created", "ward_id": []}',
           json.dumps({"type": "ticket_created", "data": {"x": "y" * 20_000}}),
           json.dumps(ticketing_message("ticket_created", "W1", "s", category="GBV"))]

    async def scenario():
        async with started_hub(live_bus) as hub:
            manager = hub.register(scopes(muni)["manager"])
            before = sum(hub.dropped.values())
            for i in range(10_000):
                await publish_raw(live_bus, muni, bad[i % len(bad)])
            await publish_raw(live_bus, muni, ticketing_message("ticket_created", "W1", "good-after-flood"))
            await until(lambda: len(manager) >= 1, timeout=60, what="the good event after the flood")
            assert tracking(manager.drain()) == ["good-after-flood"]
            # The good event names no ticket (no database here): it reached the manager only.
            assert sum(hub.dropped.values()) - before == 10_000 + 1
            assert hub.dropped[DropReason.UNRESOLVED_TICKET.value] == 1
            assert hub.status == "live" and hub.running

    run(scenario())


def test_slow_session_drops_oldest_and_is_marked_for_resync(live_bus):
    muni = fresh_municipality()

    async def scenario():
        async with started_hub(live_bus, queue_size=5) as hub:
            slow = hub.register(scopes(muni)["manager"])
            for i in range(12):
                await publish_raw(live_bus, muni, ticketing_message("ticket_updated", "W1", f"e{i}"))
            await until(lambda: hub.counters["routed"] >= 12, what="12 routed events")
            drained = slow.drain()
            assert tracking(drained) == [f"e{i}" for i in range(7, 12)]  # the newest five, in order
            assert drained.resync and slow.overflowed == 7
            assert not slow.drain().resync  # the flag is cleared once read

    run(scenario())


def test_lost_connection_pauses_reconnects_resyncs_and_leaks_nothing(live_bus):
    muni = fresh_municipality()

    async def scenario():
        async with started_hub(live_bus) as hub:
            feed = hub.register(scopes(muni)["manager"])
            tasks_before = len(asyncio.all_tasks())
            for round_ in range(3):
                drop_connection(live_bus)
                assert await hub.wait_for_status("paused", 10), hub.snapshot()
                assert feed.drain().status == "paused"  # what the session's indicator shows
                assert await hub.wait_for_status("live", 10), hub.snapshot()
                assert feed.drain().resync, "every session reloads after a gap"
            assert len(asyncio.all_tasks()) == tasks_before
            if isinstance(live_bus, RedisBus):
                assert subscriber_connections(live_bus.url, live_bus.client_name) == {live_bus.client_name: 1}
            else:
                assert live_bus.subscriber_count == 1
            await publish_raw(live_bus, muni, ticketing_message("ticket_created", "W1", "after-reconnects"))
            await until(lambda: len(feed) == 1, what="an event after reconnecting")
            assert hub.counters["connects"] == 4

    run(scenario())


def test_change_mark_moves_with_every_event_of_its_municipality_and_every_reconnect(live_bus, engine):
    muni, other = fresh_municipality(), fresh_municipality()
    seen, last = add_ticket(engine, muni, "W1"), add_ticket(engine, muni, "W1")

    async def scenario():
        async with started_hub(live_bus, engine=engine) as hub:
            feed = hub.register(scopes(muni)["w1"])
            first = hub.change_mark(muni)
            assert first is not None and hub.change_mark(str(muni)) == first
            await publish_raw(live_bus, other, ticketing_message("ticket_created", "W1", "elsewhere"))
            await publish_raw(live_bus, muni, "{not json")
            await publish_raw(live_bus, muni, ticketing_message("ticket_updated", "W1", seen["tracking_number"]))
            await until(lambda: len(feed) == 1, what="the event")
            assert hub.change_mark(muni)[1] == first[1] + 2  # its own messages, a malformed one too ...
            moved = hub.change_mark(muni)
            # ... and ones no session here may see: another ward, a (now) sensitive ticket.
            await publish_raw(live_bus, muni, ticketing_message("ticket_updated", "W2", "other-ward"))
            await publish_raw(live_bus, muni, ticketing_message("ticket_created", "W1", "gbv", category="GBV"))
            await publish_raw(live_bus, muni, ticketing_message("ticket_updated", "W1", last["tracking_number"]))
            await until(lambda: len(feed) == 2, what="the last event")
            assert hub.change_mark(muni)[1] == moved[1] + 3
            drop_connection(live_bus)
            assert await hub.wait_for_status("paused", 10), hub.snapshot()
            assert hub.change_mark(muni) is None  # changes may go unseen: no mark
            assert await hub.wait_for_status("live", 10), hub.snapshot()
            assert hub.change_mark(muni) not in (None, moved)
            assert hub.change_mark("not a uuid") is None

    run(scenario())


def test_hub_without_bus_at_start_keeps_retrying_and_reports_paused():
    bus = RedisBus("redis://127.0.0.1:1/0", client_name="opsdash-hub-test-nowhere")

    async def scenario():
        async with started_hub(bus, status="paused", base_delay=0.01, max_delay=0.05) as hub:
            await until(lambda: hub.counters["reconnect_attempts"] >= 3, what="several reconnect attempts")
            assert hub.running and "BusUnavailable" in hub.last_error
        assert hub.status == "stopped" and not hub.running

    run(scenario())


def test_publish_without_bus_raises_clear_error():
    with pytest.raises(BusUnavailable, match="cannot publish"):
        run(RedisBus("redis://127.0.0.1:1/0").publish("dashboard:x", "{}"))


def test_thousand_register_unregister_cycles_leave_no_registration(live_bus):
    muni = fresh_municipality()

    async def scenario():
        async with started_hub(live_bus) as hub:
            for i in range(1000):
                feed = hub.register(scopes(muni)["w1" if i % 2 else "manager"])
                await publish_raw(live_bus, muni, ticketing_message("ticket_created", "W1", f"c{i}"))
                hub.unregister(feed)
                hub.unregister(feed)  # idempotent: several teardown paths may run
            assert hub.session_count == 0 and hub._sessions == {}

    run(scenario())


def test_register_refuses_anything_but_a_scope():
    hub = Hub(None, engine=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hub.register({"municipality_id": str(uuid.uuid4()), "role": "admin"})  # type: ignore[arg-type]


def test_unreachable_database_drops_ticket_events_fail_closed(live_bus):
    from data.db import make_engine

    muni = fresh_municipality()
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 1})

    async def scenario():
        async with started_hub(live_bus, engine=dead) as hub:
            manager = hub.register(scopes(muni)["manager"])
            unknown_ticket = {"type": "ticket_updated", "ward_id": "W1", "ticket_id": str(uuid.uuid4())}
            await publish_raw(live_bus, muni, unknown_ticket)
            await publish_raw(live_bus, muni, ticketing_message("ticket_updated", "W1", "named-by-tracking-number"))
            await publish_raw(live_bus, muni, {"type": "ticket_updated", "ward_id": "W1", "data": {"status": "open"}})
            await until(lambda: len(manager) >= 1, what="the event that names no ticket")
            drained = manager.drain()
            assert [e.status for e in drained.events] == ["open"]
            assert hub.dropped[DropReason.LOOKUP_FAILED.value] == 2
            # What was dropped is not lost: the session reloads from the database once it answers.
            assert drained.resync and hub.counters["resyncs_after_failed_lookup"] >= 1

    run(scenario())
    dead.dispose()


def test_one_lookup_resolves_names_in_any_spelling_and_reports_conflicts(engine):
    from data.named_tickets import lookup_named_tickets, ticket_visibility
    from data.sensitivity import name_key

    muni = fresh_municipality()
    tickets = [add_ticket(engine, muni, "W1", sensitive=s, category=c)
               for s, c in ((True, "water"), (False, "GBV"), (False, "roads"), (False, "fire"))]
    ids = [t["id"] for t in tickets] + [uuid.uuid4()]
    lookup = lookup_named_tickets(engine, ids + ids[:1], [name_key(t["tracking_number"]) for t in tickets])
    assert [lookup.by_id[t].visible if t in lookup.by_id else "missing" for t in ids] == [
        False, False, True, False, "missing"]  # "fire" is no known category: not visible
    for ticket in tickets:  # one ticket named twice, the number in another case and with spaces
        spelled = f"\u00a0{ticket['tracking_number'].lower()} "
        assert lookup.resolve(ticket["id"], name_key(spelled)) == lookup.by_id[ticket["id"]]
        assert ticket_visibility(engine, tracking_number=spelled) == ticket_visibility(engine, ticket["id"])
    assert lookup.resolve(tickets[0]["id"], name_key(tickets[1]["tracking_number"])) == "conflict"
    assert lookup.resolve(ids[-1], None) is None
    assert lookup.resolve(tickets[2]["id"], "no-such-number") == "conflict"  # one name found, one not
    assert ticket_visibility(engine, "not-a-uuid") == "missing"
    assert lookup.known_categories >= {"water", "roads"} and "gbv" not in lookup.known_categories
