"""The HTTP API through a real ``opsdash serve`` on PostgreSQL and Redis, called as scripts call it (issue 18).

Tokens on ``Authorization: Bearer``; events published with plain redis-py as
the ticketing system does, so the hub (not a publisher's refusal) is what
keeps forbidden events out; exports compared byte for byte with ``opsdash
export`` for the same user and filters.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import requests
from sqlalchemy import select

from data.api_tokens import create_token, list_tokens, revoke_token
from data.db import get_engine
from data.filters import TicketFilters
from data.models import ExportAudit
from data.seed import SeedResult, seed

from .helpers.api import (
    ROLE_DETAIL,
    SseClient,
    api_get,
    bearer,
    token_for,
    xlsx_parts,
)
from .helpers.databases import user_of
from .helpers.live import add_ticket, publish, subscriber_connections, ticketing_message, wait_until
from .helpers.servers import OpsDashServer, run_opsdash
from .helpers.web import sign_in

pytestmark = pytest.mark.slow
CSV, EXCEL = "/api/v1/export/tickets/csv", "/api/v1/export/tickets/excel"
RATE = 30


@dataclass
class ApiSite:
    engine: object
    url: str
    result: SeedResult
    server: OpsDashServer
    redis_url: str

    def user(self, role: str, municipality: int = 0, ward_index: int = 0) -> dict:
        return user_of(self.result, role, municipality, ward_index)

    def token(self, role: str, municipality: int = 0, ward_index: int = 0, **kwargs) -> str:
        return token_for(self.engine, self.user(role, municipality, ward_index)["username"], **kwargs)

    def audits(self, username: str) -> list[ExportAudit]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(ExportAudit).where(ExportAudit.username == username)
                                     .order_by(ExportAudit.id)).all())


@pytest.fixture(scope="module")
def api_site(pg_url, redis_url, tmp_path_factory, module_random_seed):
    engine = get_engine(pg_url)
    result = seed(engine, tickets=400, wards=3, municipalities=2, random_seed=module_random_seed)
    server = OpsDashServer(database_url=pg_url, redis_url=redis_url, log_dir=tmp_path_factory.mktemp("api"),
                           env={"OPSDASH_API_HEARTBEAT_S": "0.5", "OPSDASH_API_RATE_PER_MINUTE": str(RATE)})
    server.start()
    try:
        yield ApiSite(engine, server.url, result, server, redis_url)
    finally:
        server.stop()


def connected(client: SseClient) -> SseClient:
    client.wait_for(lambda c: c.of_type("connected"), what="the connected event")
    return client


# ---- the event stream -------------------------------------------------------------------------

def test_token_clients_stream_exactly_their_scoped_events_on_one_redis_connection(api_site):
    site = api_site
    muni, other_muni = site.result.municipalities[0], site.result.municipalities[1]
    ward, other_ward = muni["wards"][0], muni["wards"][1]
    clients = {
        "manager": connected(SseClient(site.url, bearer(site.token("manager")))),
        "councillor": connected(SseClient(site.url, bearer(site.token("ward_councillor", ward_index=0)))),
        "other_councillor": connected(SseClient(site.url, bearer(site.token("ward_councillor", ward_index=1)))),
        "other_municipality": connected(SseClient(site.url, bearer(site.token("manager", municipality=1)))),
    }
    for name, client in clients.items():
        assert client.status == 200 and client.response_headers["Content-Type"].startswith("text/event-stream")
        expected_muni = other_muni if name == "other_municipality" else muni
        assert client.of_type("connected")[0].json == {"status": "connected", "municipality_id": expected_muni["id"]}
    in_ward, in_other_ward, no_ward = (add_ticket(site.engine, muni["id"], w) for w in (ward, other_ward, None))
    flagged = add_ticket(site.engine, muni["id"], ward, sensitive=True)
    elsewhere = add_ticket(site.engine, other_muni["id"], other_muni["wards"][0])
    messages = [
        ticketing_message("ticket_created", ward, in_ward["tracking_number"]),
        ticketing_message("ticket_updated", other_ward, in_other_ward["tracking_number"]),
        ticketing_message("sla_breach", None, no_ward["tracking_number"]),
        ticketing_message("ticket_updated", ward, "NO-SUCH-TICKET"),  # unresolved: whole municipality only
        ticketing_message("ticket_updated", ward, flagged["tracking_number"]),  # sensitive in the database
        ticketing_message("ticket_created", ward, in_ward["tracking_number"], category="gbv"),
        {**ticketing_message("ticket_created", ward, in_ward["tracking_number"]), "is_sensitive": True},
        ticketing_message("ticket_updated", ward, in_other_ward["tracking_number"]),  # claims the wrong ward
    ]
    for message in messages:
        publish(site.redis_url, muni["id"], message)
    publish(site.redis_url, other_muni["id"], ticketing_message("ticket_created", other_muni["wards"][0],
                                                                 elsewhere["tracking_number"]))
    sentinel = add_ticket(site.engine, muni["id"], ward)
    publish(site.redis_url, muni["id"], ticketing_message("assignment_changed", ward, sentinel["tracking_number"]))
    for name in ("manager", "councillor"):
        clients[name].wait_for(lambda c: sentinel["tracking_number"] in c.tracking_numbers(), what=f"{name}: sentinel")
    clients["other_municipality"].wait_for(lambda c: elsewhere["tracking_number"] in c.tracking_numbers())
    clients["other_councillor"].wait_for(lambda c: in_other_ward["tracking_number"] in c.tracking_numbers())
    wait_until(lambda: all(c.comments for c in clients.values()), what="heartbeat comments")
    seen = {name: c.tracking_numbers() for name, c in clients.items()}
    assert seen["manager"] == [in_ward["tracking_number"], in_other_ward["tracking_number"],
                               no_ward["tracking_number"], "NO-SUCH-TICKET", in_other_ward["tracking_number"],
                               sentinel["tracking_number"]]
    assert seen["councillor"] == [in_ward["tracking_number"], sentinel["tracking_number"]]
    assert seen["other_councillor"] == [in_other_ward["tracking_number"]]
    assert seen["other_municipality"] == [elsewhere["tracking_number"]]
    manager_events = [e for e in clients["manager"].events if e.event != "connected"]
    assert [e.event for e in manager_events] == ["ticket_created", "ticket_updated", "sla_breach", "ticket_updated",
                                                 "ticket_updated", "assignment_changed"]
    assert manager_events[0].json == {"tracking_number": in_ward["tracking_number"], "category": "water",
                                      "status": "open"}
    assert len({e.id for e in manager_events}) == len(manager_events)
    # Four streams, one subscriber connection for the whole process.
    assert subscriber_connections(site.redis_url).get(f"opsdash-hub-{site.server.process.pid}") == 1
    sessions = site.server.health()["live"]["hub"]["sessions"]
    for client in clients.values():
        client.close()
    wait_until(lambda: site.server.health()["live"]["hub"]["sessions"] == sessions - 4,
               what="closed streams to leave the hub")


def test_a_token_reconnecting_with_last_event_id_gets_what_it_missed(api_site):
    site = api_site
    muni = site.result.municipalities[0]
    token = site.token("manager")
    first = connected(SseClient(site.url, bearer(token)))
    before = add_ticket(site.engine, muni["id"], muni["wards"][0])
    publish(site.redis_url, muni["id"], ticketing_message("ticket_created", muni["wards"][0], before["tracking_number"]))
    first.wait_for(lambda c: before["tracking_number"] in c.tracking_numbers())
    last_id = first.events[-1].id
    first.close()
    missed = add_ticket(site.engine, muni["id"], None)
    publish(site.redis_url, muni["id"], ticketing_message("ticket_updated", None, missed["tracking_number"]))
    wait_until(lambda: site.server.health()["live"]["hub"]["replay"]["last"] >= int(last_id.rsplit("-", 1)[1]) + 1,
               what="the missed event routed")
    again = connected(SseClient(site.url, {**bearer(token), "Last-Event-ID": last_id}))
    again.wait_for(lambda c: missed["tracking_number"] in c.tracking_numbers(), what="the replayed event")
    assert again.tracking_numbers() == [missed["tracking_number"]] and not again.of_type("resync")
    again.close()
    stale = connected(SseClient(site.url, {**bearer(token), "Last-Event-ID": "deadbeef-1"}))
    stale.wait_for(lambda c: c.of_type("resync"))
    assert [e.event for e in stale.events] == ["connected", "resync"]
    stale.close()


# ---- who may call -----------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["field_worker", "citizen"])
def test_roles_without_a_dashboard_get_the_plans_403_on_every_route(api_site, role):
    token = api_site.token(role)
    stream = SseClient(api_site.url, bearer(token))
    assert (stream.status, json.loads(stream.body)) == (403, ROLE_DETAIL)
    assert stream.response_headers["Content-Type"] == "application/json"
    for path in (CSV, EXCEL):
        response = api_get(api_site.url, path, bearer(token))
        assert (response.status_code, response.json()) == (403, ROLE_DETAIL)
    assert api_site.audits(api_site.user(role)["username"]) == []


def test_revoked_expired_unknown_and_malformed_credentials_are_refused_with_401(api_site):
    engine, username = api_site.engine, api_site.user("manager")["username"]
    info, revoked = create_token(engine, username, "revoked")
    assert api_get(api_site.url, CSV, bearer(revoked)).status_code == 200
    revoke_token(engine, info.id)
    _, expired = create_token(engine, username, "expired", timedelta(hours=1),
                              now=datetime.now(timezone.utc) - timedelta(hours=2))
    good = api_site.token("manager")
    headers = [bearer(revoked), bearer(expired), bearer("opsdash_" + "A" * 43), bearer(good[:-2]),
               {"Authorization": good}, {"Authorization": f"Basic {good}"}, {"Authorization": "Bearer"},
               {"Authorization": "Bearer "}, {"Authorization": f"Bearer {good} {good}"},
               {"Authorization": f"Bearer\t{good}x"}, {"Authorization": "Bearer " + "x" * 5000},
               {"Authorization": "Bearer %FF%FE"}, {"Authorization": ""}, {}, {"Cookie": "user=" + username}]
    before = len(api_site.audits(username))
    for header in headers:
        for path in (CSV, EXCEL):
            response = api_get(api_site.url, path, header)
            assert response.status_code == 401, (header, response.text)
            assert set(response.json()) == {"detail"} and "Traceback" not in response.text
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        stream = SseClient(api_site.url, header)
        assert stream.status == 401 and "detail" in json.loads(stream.body)
    assert len(api_site.audits(username)) == before
    assert api_site.server.process.poll() is None


def test_every_token_use_is_recorded_and_each_token_has_its_own_rate_limit(api_site):
    username = api_site.user("admin")["username"]
    info, token = create_token(api_site.engine, username, "rate")
    other = api_site.token("admin")
    codes = [api_get(api_site.url, "/api/v1/export/tickets/csv", bearer(token), status="closed",
                     search="no such text anywhere").status_code for _ in range(RATE + 1)]
    assert codes == [200] * RATE + [429]
    refused = api_get(api_site.url, CSV, bearer(token))
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60" and "a minute" in refused.json()["detail"]
    assert api_get(api_site.url, CSV, bearer(other), status="closed").status_code == 200
    used = next(t for t in list_tokens(api_site.engine, username) if t.id == info.id)
    assert used.last_used_from == "127.0.0.1"
    assert datetime.now(timezone.utc) - used.last_used_at < timedelta(minutes=2)


def test_the_signed_in_cookie_works_same_origin_only(api_site):
    manager = api_site.user("manager")
    http, response = sign_in(api_site.url, manager["username"], manager["password"])
    assert response.status_code == 302
    ok = http.get(api_site.url + CSV, params={"status": "open"}, timeout=60)
    assert ok.status_code == 200 and ok.content.startswith(b"\xef\xbb\xbf")
    cross = http.get(api_site.url + CSV, headers={"Sec-Fetch-Site": "cross-site"}, timeout=60)
    assert cross.status_code == 403 and "cross-site" in cross.json()["detail"]
    http.get(api_site.url + "/logout", timeout=30)
    ended = http.get(api_site.url + CSV, timeout=60)
    assert ended.status_code == 401


# ---- exports ----------------------------------------------------------------------------------

@pytest.mark.parametrize("role,municipality", [("manager", 0), ("ward_councillor", 0), ("manager", 1)])
def test_exports_are_the_bytes_of_opsdash_export_for_the_same_user_and_filters(api_site, tmp_path, role, municipality):
    site = api_site
    user = site.user(role, municipality)
    wards = site.result.municipalities[municipality]["wards"]
    forged = next(w for w in wards if w != user["ward_id"])  # a councillor's is ignored, as by the CLI
    token = site.token(role, municipality)
    for path, fmt in ((CSV, "csv"), (EXCEL, "xlsx")):
        response = requests.get(site.url + path, headers=bearer(token), timeout=120,
                                params=[("status", "open"), ("status", "in_progress,escalated"),
                                        ("category", "water,electricity"), ("category", "roads"),
                                        ("ward_id", forged), ("created_from", "2000-01-01")])
        assert response.status_code == 200, response.text
        assert response.headers["Content-Disposition"].startswith("attachment; filename=\"tickets_")
        assert response.headers["Content-Disposition"].endswith(f'.{fmt}"')
        out = tmp_path / f"cli.{fmt}"
        done = run_opsdash("export", "--user", user["username"], "--format", fmt, "--status", "open",
                           "--status", "in_progress,escalated", "--category", "water,electricity",
                           "--category", "roads", "--ward", forged, "--from", "2000-01-01", "--output", str(out),
                           database_url=site.server.database_url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        if fmt == "csv":
            assert response.content == out.read_bytes() and response.content.count(b"\r\n") > 1
        else:
            assert xlsx_parts(response.content) == xlsx_parts(out)
    audits = site.audits(user["username"])
    api_rows = [a for a in audits if a.channel == "api"][-2:]
    assert [(a.format, a.channel) for a in api_rows] == [("csv", "api"), ("xlsx", "api")]
    applied = TicketFilters.parse(json.loads(api_rows[-1].filters))
    assert bool(applied.wards) == (role != "ward_councillor")


@pytest.mark.parametrize("query,message", [
    ({"colour": "red"}, "unknown query parameter 'colour'"),
    ({"status": "lost"}, "unknown status 'lost'"),
    ({"category": "gbv"}, "unknown category 'gbv'"),
    ({"created_from": "2026-02-30"}, "created from must be a date"),
    ({"created_from": "2026-03-02", "created_to": "2026-03-01"}, "after the 'created to' date"),
    ({"search": "x" * 201}, "search text is too long"),
    ([("search", "a"), ("search", "b")], "give search once"),
    ({"ward_id": "<script>"}, "not a ward id"),
    ("status=%FF%FE", "not UTF-8"),
])
def test_bad_filters_get_a_clear_400_in_json_and_no_audit_row(api_site, query, message):
    token = api_site.token("manager")
    for path in (CSV, EXCEL):
        url = api_site.url + path + ("?" + query if isinstance(query, str) else "")
        response = requests.get(url, headers=bearer(token), timeout=60,
                                params=None if isinstance(query, str) else query)
        assert response.status_code == 400, response.text
        assert response.headers["Content-Type"] == "application/json" and message in response.json()["detail"]
    assert not [a for a in api_site.audits(api_site.user("manager")["username"]) if a.filters.count("<script>")]


# ---- the document -----------------------------------------------------------------------------

def test_openapi_document_is_valid_openapi_3_1_and_describes_every_api_route(api_site):
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate

    response = api_get(api_site.url, "/api/v1/openapi.json")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    document = response.json()
    validate(document, cls=OpenAPIV31SpecValidator)  # raises on any violation of the 3.1 schema
    assert document["openapi"].startswith("3.1")

    assert set(document["paths"]) == {"/api/v1/dashboard/events", CSV, EXCEL, "/api/v1/openapi.json"}
    for path, operations in document["paths"].items():
        if path.endswith("openapi.json"):
            continue
        assert {"401", "403", "429", "503"} <= set(operations["get"]["responses"]), path
    assert ROLE_DETAIL["detail"] in json.dumps(document)
    unknown = api_get(api_site.url, "/api/v1/nothing-here")
    assert unknown.status_code == 404
    assert requests.post(api_site.url + CSV, headers=bearer(api_site.token("manager")), timeout=30).status_code == 405


def test_no_credential_no_stream_and_a_forged_query_ward_never_widens_a_councillors_stream(api_site):
    anonymous = SseClient(api_site.url, {})
    assert anonymous.status == 401
    site = api_site
    muni = site.result.municipalities[0]
    councillor = site.user("ward_councillor")
    other_ward = next(w for w in muni["wards"] if w != councillor["ward_id"])
    token = site.token("ward_councillor")
    client = SseClient(site.url, bearer(token), query=f"ward_id={other_ward}")  # never read
    connected(client)
    theirs = add_ticket(site.engine, muni["id"], other_ward)
    mine = add_ticket(site.engine, muni["id"], councillor["ward_id"])
    publish(site.redis_url, muni["id"], ticketing_message("ticket_created", other_ward, theirs["tracking_number"]))
    publish(site.redis_url, muni["id"], ticketing_message("ticket_created", councillor["ward_id"],
                                                           mine["tracking_number"]))
    client.wait_for(lambda c: mine["tracking_number"] in c.tracking_numbers())
    assert client.tracking_numbers() == [mine["tracking_number"]]
    client.close()


def test_an_api_export_waits_for_the_export_lane_and_is_refused_503_when_it_stays_full(monkeypatch, tmp_path):
    """The API shares ``/export/download``'s writer and lane: a full lane is a 503, never an unbounded queue."""
    import asyncio
    import threading

    import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)

    from dashboard_app import export_route
    from data.scope import Scope
    from data.workers import Lane

    lane = Lane("export", 1, 0.2, "Too many exports are running right now. Try again in a minute.")
    monkeypatch.setattr(export_route, "EXPORT", lane)
    release = threading.Event()
    busy = lane.submit(release.wait, 10)
    refused: list[tuple[int, str]] = []
    scope = Scope(municipality_id="00000000-0000-0000-0000-000000000001", role="manager", username="m")
    try:
        asyncio.run(export_route.send_export(object(), scope, TicketFilters(), "csv", "api",
                                             lambda code, text: refused.append((code, text))))
    finally:
        release.set()
        busy.result(5)
    assert refused == [(503, "Too many exports are running right now. Try again in a minute.")]
