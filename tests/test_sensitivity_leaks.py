"""Issue 14's three leaks, reproduced as an abuse run found them (each failed on the old main).

1. A gbv category spelled with spaces, invisible characters, full-width letters
   or a look-alike Cyrillic letter reached a councillor's table, counts, CSV and XLSX.
2. An event naming a sensitive ticket by id inside ``data`` (with a top-level
   ``"ticket_id": null``) or by its tracking number in another case or with
   spaces was delivered.
3. An event claiming ward W1 about a real ticket of ward W2 reached W1's councillor.
"""
from __future__ import annotations

import io
import uuid

import pytest
from openpyxl import load_workbook

from data.aggregates import ticket_figures
from data.events import DropReason
from data.export import export_tickets
from data.scope import Scope
from data.tickets import count_tickets, scoped_tickets

from .helpers.databases import add_tickets, ticket_record
from .helpers.live import fresh_municipality, run, started_hub, until

# Each one is the gbv category to a person reading it, or not a category at all.
HOSTILE_SPELLINGS = {
    "trailing space": "GBV ",
    "leading space": " gbv",
    "no-break space": "gbv\u00a0",
    "zero-width space": "gbv\u200b",
    "full-width": "\uff27\uff22\uff36",
    "cyrillic ve": "G\u0412V",
}


def _councillor_and_manager(muni: uuid.UUID) -> list[Scope]:
    return [Scope(municipality_id=muni, role="ward_councillor", ward_id="W1", username="leak-c"),
            Scope(municipality_id=muni, role="manager", username="leak-m")]


@pytest.mark.parametrize("spelling", list(HOSTILE_SPELLINGS.values()), ids=list(HOSTILE_SPELLINGS))
def test_gbv_ticket_stays_hidden_however_its_category_is_spelled(engine, spelling, tmp_path):
    muni = fresh_municipality()
    hidden = ticket_record(muni, ward_id="W1", category=spelling, tracking_number=f"HID-{uuid.uuid4().hex[:10]}",
                           description="survivor statement")
    shown = ticket_record(muni, ward_id="W1", category="water")
    add_tickets(engine, [hidden, shown])
    for scope in _councillor_and_manager(muni):
        assert list(scoped_tickets(engine, scope)["id"]) == [str(shown["id"])]
        assert count_tickets(engine, scope) == 1
        figures = ticket_figures(engine, scope, None, ("category",))
        assert figures.breakdown["category"].tolist() == ["water"]
        assert int(figures.breakdown["tickets"].sum()) == 1
        for fmt in ("csv", "xlsx"):
            result = export_tickets(engine, scope, None, fmt, tmp_path / f"out.{fmt}", channel="cli")
            assert result.row_count == 1
            data = result.path.read_bytes()
            if fmt == "xlsx":
                book = load_workbook(io.BytesIO(data), read_only=True)
                data = "\n".join(str(c) for ws in book.worksheets for r in ws.iter_rows(values_only=True)
                                 for c in r).encode()
            assert hidden["tracking_number"].encode() not in data
            assert b"survivor" not in data


def _gbv_ticket(engine, muni: uuid.UUID, ward: str, tracking_number: str) -> dict:
    record = ticket_record(muni, ward_id=ward, category="gbv", is_sensitive=True, tracking_number=tracking_number)
    add_tickets(engine, [record])
    return record


def test_event_naming_a_sensitive_ticket_anywhere_and_in_any_spelling_is_never_delivered(live_bus, engine):
    muni = fresh_municipality()
    number = f"ETH-{uuid.uuid4().hex[:4].upper()}-0000560"
    secret = _gbv_ticket(engine, muni, "W1", number)
    sentinel = ticket_record(muni, ward_id="W1")
    add_tickets(engine, [sentinel])
    disguised = [
        # An explicit null at the top level hid the id given in data.
        {"type": "ticket_updated", "ward_id": "W1", "ticket_id": None,
         "data": {"ticket_id": str(secret["id"]), "category": "water", "status": "in_progress"}},
        {"type": "ticket_updated", "ward_id": "W1", "data": {"tracking_number": number.lower(), "category": "water"}},
        {"type": "ticket_updated", "ward_id": "W1", "data": {"tracking_number": f" {number} ", "category": "water"}},
        {"type": "ticket_updated", "ward_id": "W1", "data": {"tracking_number": f"\u00a0{number}\u200b",
                                                             "category": "water"}},
    ]

    async def scenario():
        import json

        from data.events import channel_for

        async with started_hub(live_bus, engine=engine) as hub:
            feeds = [hub.register(scope) for scope in _councillor_and_manager(muni)]
            for message in disguised:
                await live_bus.publish(channel_for(muni), json.dumps(message))
            await live_bus.publish(channel_for(muni), json.dumps(
                {"type": "ticket_updated", "ward_id": "W1",
                 "data": {"tracking_number": sentinel["tracking_number"], "category": "water"}}))
            await until(lambda: all(len(f) >= 1 for f in feeds), what="the sentinel at both sessions")
            for feed in feeds:
                assert [e.tracking_number for e in feed.drain().events] == [sentinel["tracking_number"]]
            assert hub.dropped[DropReason.SENSITIVE_TICKET.value] == len(disguised)

    run(scenario())


def test_event_claiming_another_ward_is_routed_by_the_ward_the_database_holds(live_bus, engine):
    muni = fresh_municipality()
    in_w2 = ticket_record(muni, ward_id="W2")
    add_tickets(engine, [in_w2])

    async def scenario():
        import json

        from data.events import channel_for

        async with started_hub(live_bus, engine=engine) as hub:
            w1 = hub.register(Scope(municipality_id=muni, role="ward_councillor", ward_id="W1"))
            w2 = hub.register(Scope(municipality_id=muni, role="ward_councillor", ward_id="W2"))
            manager = hub.register(Scope(municipality_id=muni, role="manager"))
            lie = {"type": "ticket_updated", "ward_id": "W1", "ticket_id": str(in_w2["id"]),
                   "data": {"tracking_number": in_w2["tracking_number"], "category": "water", "status": "open"}}
            await live_bus.publish(channel_for(muni), json.dumps(lie))
            await until(lambda: len(manager) >= 1, what="the event at the manager")
            assert len(w1) == 0
            assert len(w2) == 0  # the event's ward claim may only narrow delivery, never redirect it
            assert [e.tracking_number for e in manager.drain().events] == [in_w2["tracking_number"]]

    run(scenario())
