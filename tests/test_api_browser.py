"""Chromium's own EventSource on a signed-in page: scoped events, and a resume with Last-Event-ID after the server ends the stream.

The page is a councillor's dashboard (signed in through the real form, so the
cookie is the credential); the stream ends after ``OPSDASH_API_STREAM_MAX_S``
and the browser reconnects by itself. An event published while it is away
must arrive through the replay buffer (the second ``connected`` carries the
resume point, which only the browser's ``Last-Event-ID`` header can have told
the server), and nothing outside the councillor's ward ever arrives.
"""
from __future__ import annotations

import json

import pytest

from data.db import get_engine
from data.seed import seed

from .helpers.browser import browser_sign_in
from .helpers.databases import user_of
from .helpers.live import add_ticket, publish, ticketing_message, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser]
STREAM_MAX_S = 5

LISTEN = """() => {
  window.opsdashEvents = []; window.opsdashOpens = 0; window.opsdashErrors = 0;
  const source = new EventSource('./api/v1/dashboard/events');
  for (const type of ['connected', 'ticket_created', 'ticket_updated', 'sla_breach', 'assignment_changed', 'resync']) {
    source.addEventListener(type, e => window.opsdashEvents.push({type, data: JSON.parse(e.data), id: e.lastEventId}));
  }
  source.onopen = () => { window.opsdashOpens += 1; };
  source.onerror = () => { window.opsdashErrors += 1; };
  window.opsdashSource = source;
}"""


def events(page) -> list[dict]:
    return page.evaluate("() => window.opsdashEvents")


def tracking(page) -> list[str]:
    return [e["data"].get("tracking_number") for e in events(page) if e["type"] not in ("connected", "resync")]


def test_eventsource_on_a_signed_in_page_gets_its_ward_and_resumes_after_the_server_ends_the_stream(
        pg_url, redis_url, opsdash_server, browser_page, random_seed):
    engine = get_engine(pg_url)
    result = seed(engine, tickets=60, wards=2, municipalities=1, random_seed=random_seed)
    muni = result.municipalities[0]
    councillor = user_of(result, "ward_councillor", ward_index=0)
    ward, other_ward = councillor["ward_id"], next(w for w in muni["wards"] if w != councillor["ward_id"])
    server = opsdash_server(pg_url, redis_url=redis_url, env={"OPSDASH_API_STREAM_MAX_S": str(STREAM_MAX_S),
                                                               "OPSDASH_API_HEARTBEAT_S": "1"})
    page = browser_page
    browser_sign_in(page, server.url, councillor["username"], councillor["password"], dashboard=False)
    page.evaluate(LISTEN)
    wait_until(lambda: [e["type"] for e in events(page)] == ["connected"], what="the connected event")
    assert events(page)[0]["data"] == {"status": "connected", "municipality_id": muni["id"]}

    mine, theirs, no_ward = (add_ticket(engine, muni["id"], w) for w in (ward, other_ward, None))
    flagged = add_ticket(engine, muni["id"], ward, sensitive=True)
    for message in (ticketing_message("ticket_updated", other_ward, theirs["tracking_number"]),
                    ticketing_message("sla_breach", None, no_ward["tracking_number"]),
                    ticketing_message("ticket_updated", ward, flagged["tracking_number"]),
                    ticketing_message("ticket_created", ward, mine["tracking_number"], category="gbv"),
                    ticketing_message("ticket_created", ward, mine["tracking_number"])):
        publish(redis_url, muni["id"], message)
    wait_until(lambda: mine["tracking_number"] in tracking(page), what="the councillor's own event")

    # The server ends the stream after STREAM_MAX_S; the browser waits `retry` (3 s) before reconnecting.
    wait_until(lambda: page.evaluate("() => window.opsdashErrors") >= 1, timeout=STREAM_MAX_S + 10,
               what="the server to end the stream")
    missed = add_ticket(engine, muni["id"], ward)
    publish(redis_url, muni["id"], ticketing_message("assignment_changed", ward, missed["tracking_number"]))
    publish(redis_url, muni["id"], ticketing_message("ticket_created", other_ward, theirs["tracking_number"]))
    wait_until(lambda: missed["tracking_number"] in tracking(page), timeout=20, what="the missed event, replayed")
    seen = events(page)
    assert page.evaluate("() => window.opsdashOpens") >= 2
    connects = [e for e in seen if e["type"] == "connected"]
    # The server resumed from the last id the browser had (on a loaded machine the stream may end
    # before the events above arrive: then they come in the second stream, after its connect).
    assert len(connects) >= 2 and connects[1]["id"] == seen[seen.index(connects[1]) - 1]["id"]
    assert not [e for e in seen if e["type"] == "resync"]
    assert tracking(page) == [mine["tracking_number"], missed["tracking_number"]], json.dumps(seen)
    page.evaluate("() => window.opsdashSource.close()")
