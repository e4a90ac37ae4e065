"""Dashboard reads on a PostgreSQL streaming replica (OPSDASH_READ_DATABASE_URL), started by the test.

A private primary and a ``pg_basebackup -R`` replica on loopback ports (tests/helpers/pg_replica.py).
What must hold:
- reads go to the replica once it holds what the primary has (``data.replica.ReadRoute``);
- while the replica lags (replay paused: ``pg_wal_replay_pause()``), what it holds is stale, yet no
  user sees stale data through OpsDash: the primary answers, so a ticket flagged sensitive on the
  primary, a sensitive ticket just created, a ticket moved to another ward never show, and a new
  ticket does; sign-in, sessions, a new user's dashboard and the export audit (writes, then reads)
  work; the lag is reported (``replica_lag_s``, ``ReadRoute.snapshot`` for ``/health``);
- replay resumed, reads return to the replica; a replica that cannot be reached costs nothing but its load.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from components.store import DashboardStore
from components.table import TicketTable
from dashboard_app.dashboard import Dashboard
from data.db import make_engine, migrate
from data.errors import ConfigError
from data.export import export_tickets
from data.models import Ticket
from data.replica import ReadRoute, replica_lag_s
from data.scope import scope_for_user
from data.seed import seed
from data.tickets import count_tickets, scoped_tickets
from data.users import authenticate, create_user
from data.web_sessions import start_session, valid_session

from .helpers.databases import add_tickets, ticket_record, user_of
from .helpers.live import wait_until
from .helpers.metrics import scrape
from .helpers.pg_replica import primary_and_replica
from .helpers.redis_servers import redis_cluster
from .helpers.services import require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def replicated(module_random_seed):
    """(primary engine, replica engine, seed result, Replicated) for a seeded database, replica caught up."""
    require_postgres()  # the same programs; skips (or fails under CI) without PostgreSQL
    with primary_and_replica() as servers:
        admin = make_engine(servers.primary.url(), isolation_level="AUTOCOMMIT", poolclass=None)
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE opsdash"))
        admin.dispose()
        primary = make_engine(servers.primary.url("opsdash"))
        replica = make_engine(servers.replica.url("opsdash"))
        try:
            migrate(primary)
            result = seed(primary, tickets=400, wards=4, municipalities=2, random_seed=module_random_seed)
            servers.wait_replayed()
            yield primary, replica, result, servers
        finally:
            primary.dispose()
            replica.dispose()


def audit_rows(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM export_audit")).scalar_one()


def visible_ticket_of(engine, scope) -> dict:
    frame = scoped_tickets(engine, scope)
    row = frame.iloc[0]
    return {"id": uuid.UUID(str(row["id"])), "tracking_number": row["tracking_number"], "ward_id": row["ward_id"]}


def test_the_lag_is_zero_when_caught_up_none_on_a_primary_and_grows_while_replay_is_paused(replicated):
    primary, replica, result, servers = replicated
    assert replica_lag_s(replica) == 0.0
    assert replica_lag_s(primary) is None
    servers.pause_replay()
    try:
        add_tickets(primary, [ticket_record(uuid.UUID(result.municipalities[0]["id"]))])
        with primary.connect() as connection:
            connection.execute(text("SELECT pg_sleep(0.3)"))
        lag = replica_lag_s(replica)
        assert lag is not None and lag > 0.2, lag
        snapshot = ReadRoute(primary, replica).snapshot()
        assert snapshot["configured"] is True and snapshot["lag_s"] > 0.2
    finally:
        servers.resume_replay()
    servers.wait_replayed()
    assert replica_lag_s(replica) == 0.0
    assert ReadRoute(primary).snapshot() == {"configured": False}


def test_reads_go_to_the_replica_once_it_holds_what_the_primary_has(replicated):
    primary, replica, result, servers = replicated
    route = ReadRoute(primary, replica)
    assert route.engine() is replica and route.counts["replica"] == 1
    add_tickets(primary, [ticket_record(uuid.UUID(result.municipalities[0]["id"]))])  # streamed in milliseconds
    assert route.engine() is replica and route.counts["replica"] == 2


def test_while_the_replica_lags_users_see_current_data_never_a_sensitive_ticket_and_sign_in_works(replicated, tmp_path):
    primary, replica, result, servers = replicated
    manager = scope_for_user(primary, user_of(result, "manager")["username"])
    councillor = scope_for_user(primary, user_of(result, "ward_councillor")["username"])
    muni = manager.municipality_id
    flagged = visible_ticket_of(primary, councillor)  # in the councillor's ward, shown to both
    moved = scoped_tickets(primary, councillor).iloc[1]
    route = ReadRoute(primary, replica, catch_up_s=0.3, recheck_s=5.0)
    servers.pause_replay()
    try:
        # The ticketing system writes on the primary meanwhile.
        with primary.begin() as connection:
            connection.execute(update(Ticket).where(Ticket.id == flagged["id"]).values(is_sensitive=True))
            connection.execute(update(Ticket).where(Ticket.id == uuid.UUID(str(moved["id"])))
                               .values(ward_id=f"{councillor.ward_id}-elsewhere"))
        new = ticket_record(muni, ward_id=councillor.ward_id, description="new while the replica lags")
        secret = ticket_record(muni, ward_id=councillor.ward_id, is_sensitive=True, description="GBV-REPLICA-SECRET")
        gbv = ticket_record(muni, ward_id=councillor.ward_id, category="gbv", description="GBV-REPLICA-CATEGORY")
        add_tickets(primary, [new, secret, gbv])

        # The replica itself is stale (the lag is real) ...
        stale = set(scoped_tickets(replica, councillor)["tracking_number"])
        assert flagged["tracking_number"] in stale and new["tracking_number"] not in stale
        # ... and nothing a user is shown comes from it: the primary answers.
        assert route.engine() is primary and route.counts["primary_replica_behind"] == 1
        forbidden = {flagged["tracking_number"], secret["tracking_number"], gbv["tracking_number"]}
        for scope in (manager, councillor):
            store = DashboardStore(scope=scope, engine=primary, reads=route, cache_ttl_s=0)
            page = TicketTable(store=store, page_size=200).load_page()
            current = count_tickets(primary, scope)
            assert page.total == current and not set(page.frame["tracking_number"]) & forbidden
            assert int(store.figures().breakdown["tickets"].sum()) == current
            frame = set(scoped_tickets(store.read_engine(), scope)["tracking_number"])  # a notebook frame
            assert new["tracking_number"] in frame and not frame & forbidden and len(frame) == current
            if scope is councillor:
                assert moved["tracking_number"] not in frame
        # An export: current rows, audited on the primary, never the flagged ticket.
        before = audit_rows(primary)
        exported = export_tickets(primary, councillor, None, "csv", tmp_path / "lagging.csv", reads=route)
        body = (tmp_path / "lagging.csv").read_text(encoding="utf-8-sig")
        assert new["tracking_number"] in body and flagged["tracking_number"] not in body
        assert "GBV-REPLICA" not in body and exported.row_count == count_tickets(primary, councillor)
        assert audit_rows(primary) == before + 1
        # Write, then read: a new user signs in, gets a session and a dashboard at once.
        name = f"new-manager-{uuid.uuid4().hex[:6]}"
        create_user(primary, name, "a-long-password-1", role="manager", municipality_id=muni)
        assert authenticate(primary, name, "a-long-password-1") is not None
        session_id = start_session(primary, name, timedelta(hours=1))
        assert valid_session(primary, session_id=session_id).username == name
        dashboard = Dashboard(username=name, engine=primary, reads=route)
        assert dashboard.store.scope.municipality_id == muni
        assert new["tracking_number"] in set(dashboard.table.load_page().frame["tracking_number"])
        # The operator sees the lag and where reads went.
        snapshot = route.snapshot()
        assert snapshot["lag_s"] > 0 and snapshot["reads"].get("primary_replica_behind", 0) >= 1
        assert snapshot["reads"].get("primary_recheck_wait", 0) >= 1  # no wait per read while it lags
    finally:
        servers.resume_replay()
    servers.wait_replayed()
    assert ReadRoute(primary, replica).engine() is replica  # a fresh route: no recheck wait
    caught_up = set(scoped_tickets(replica, councillor)["tracking_number"])
    assert new["tracking_number"] in caught_up and flagged["tracking_number"] not in caught_up


def test_an_unreachable_replica_hands_every_read_to_the_primary(replicated):
    primary, _, result, _ = replicated
    gone = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/opsdash", connect_args={"connect_timeout": 2})
    try:
        route = ReadRoute(primary, gone, recheck_s=60)
        assert route.engine() is primary and route.engine() is primary
        assert route.counts == {"primary_replica_unreachable": 1, "primary_recheck_wait": 1}
        assert "error" in str(route.snapshot()["lag_s"])
        scope = scope_for_user(primary, user_of(result, "manager")["username"])
        store = DashboardStore(scope=scope, engine=primary, reads=route, cache_ttl_s=0)
        assert int(store.figures().breakdown["tickets"].sum()) == count_tickets(primary, scope)
    finally:
        gone.dispose()


def test_read_database_url_must_be_postgresql_and_is_never_shown_with_its_password(settings_from):
    settings = settings_from(OPSDASH_READ_DATABASE_URL="postgresql://reader:pw-secret@replica.example/opsdash")
    assert settings.read_database_url.startswith("postgresql+psycopg://")
    assert "pw-secret" not in str(settings.describe()) and "pw-secret" not in repr(settings)
    with pytest.raises(ConfigError, match="OPSDASH_READ_DATABASE_URL must point at a PostgreSQL"):
        settings_from(OPSDASH_READ_DATABASE_URL="sqlite:///replica.sqlite3")
    assert settings_from().read_database_url is None


@pytest.mark.redis
def test_a_served_process_on_a_redis_cluster_and_a_replica_says_so_in_health(replicated, opsdash_server, tmp_path):
    """``opsdash serve`` with both scale-out settings: the hub on a cluster node, the replica's lag in /health."""
    primary, replica, result, servers = replicated
    with redis_cluster(tmp_path / "redis", replicas=0) as cluster:
        server = opsdash_server(servers.primary.url("opsdash"), redis_url=cluster.url,
                                env={"OPSDASH_READ_DATABASE_URL": servers.replica.url("opsdash")})
        wait_until(lambda: server.health()["live"]["hub"]["status"] == "live", what="the hub live on the cluster")
        health = server.health()
        assert health["live_bus"] == "redis-cluster" and health["redis"] == "ok"
        assert health["live"]["hub"]["node"] in {n.address for n in cluster.nodes}
        assert health["read_replica"]["configured"] is True and health["read_replica"]["lag_s"] == 0.0
        figures = scrape(server.url)  # the Operations page and Prometheus read the same series
        assert figures[("opsdash_db_replica_lag_seconds", ())] == 0.0
        assert ("opsdash_db_pool_size", (("database", "replica"),)) in figures
        muni = result.municipalities[0]["id"]
        for node in cluster.nodes:  # the ticketing system's PUBLISH on each node reaches the process
            client = node.client()
            client.publish(f"dashboard:{muni}", '{"type": "ticket_updated", "data": {}, "ward_id": null}')
            client.close()
        wait_until(lambda: server.health()["live"]["hub"]["counters"].get("received", 0) >= len(cluster.nodes),
                   what="every node's message at the served hub")
        assert sum(cluster.pubsub_clients(f"opsdash-hub-{server.process.pid}").values()) == 1
