"""``/metrics`` (issue 19.1): Prometheus text for the operator token only, numbers that move with the work done,
and the admins' Operations page showing the same figures (nobody else gets it, whatever the URL says)."""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pandas as pd
import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
import redis
import requests
from prometheus_client import CollectorRegistry

from dashboard_app.export_route import export_link
from dashboard_app.operations import REPLICA_LAG, headline_text
from dashboard_app.throttle import throttle_keys
from data import metrics, workers
from data.db import get_engine, make_engine
from data.export import export_tickets
from data.events import channel_for
from data.filters import TicketFilters
from data.scope import Scope
from data.users import create_user

from .helpers.databases import user_of
from .helpers.live import add_ticket, publish, ticketing_message, wait_until
from .helpers.metrics import metrics_response, parse, scrape, total, value
from .helpers.servers import ROOT, TEST_METRICS_TOKEN, seeded_server
from .helpers.web import pull_document, sign_in

TOKEN_RE = re.compile(r'"token":\s*"([^"]+)"')


# ---- the exposition itself (no server) ------------------------------------------------------------

def test_exposition_parses_with_prometheus_client_and_every_series_names_this_process():
    metrics.SIGN_INS.labels("ok").inc(0)
    body, content_type = metrics.exposition()
    figures, processes = parse(body.decode())
    assert content_type.startswith("text/plain; version=")
    assert processes == {metrics.PROCESS}
    names = {name for name, _ in figures}
    assert {"opsdash_sign_ins_total", "opsdash_sign_in_throttled_total", "opsdash_query_seconds_bucket",
            "opsdash_live_queue_depth_count", "opsdash_live_publish_to_session_seconds_count"} <= names
    assert not any(name.endswith("_created") for name in names)


def test_bucket_quantile_is_the_bucket_bound_the_quantile_falls_in():
    buckets = [(0.1, 5.0), (0.5, 9.0), (1.0, 10.0), (float("inf"), 10.0)]
    assert metrics.bucket_quantile(buckets, 0.5) == 0.1
    assert metrics.bucket_quantile(buckets, 0.9) == 0.5
    assert metrics.bucket_quantile(buckets, 0.95) == 1.0
    assert metrics.bucket_quantile([(1.0, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_operations_figures_fold_histograms_into_count_mean_and_quantiles():
    metrics.QUERY_SECONDS.labels("test_kind").observe(0.02)
    metrics.QUERY_SECONDS.labels("test_kind").observe(0.04)
    rows = [r for r in metrics.figures() if r["metric"] == "opsdash_query_seconds" and r["labels"] == "kind=test_kind"]
    assert len(rows) == 1 and rows[0]["count"] == 2
    assert rows[0]["mean"] == pytest.approx(0.03) and rows[0]["p50"] == 0.025 and rows[0]["p95"] == 0.05


def test_the_operations_headline_gives_the_replica_lag_or_says_there_is_none():
    class Route:  # a ReadRoute's snapshot as data.replica.ReadRoute.snapshot gives it
        def __init__(self, snapshot):
            self.snapshot = lambda: snapshot

    def headline(snapshot):
        families = list(metrics.ReplicaCollector(lambda: Route(snapshot)).collect())
        rows = [{"metric": sample.name, "labels": "", "value": sample.value}
                for family in families for sample in family.samples if sample.name == REPLICA_LAG]
        return headline_text(pd.DataFrame(rows or [], columns=["metric", "labels", "value"]))

    assert "Read replica lag (s): 2.5" in headline({"configured": True, "lag_s": 2.5, "reads": {"replica": 3}})
    assert "Read replica lag (s): no replica" in headline({"configured": False})
    assert "Read replica lag (s): no replica" in headline({"configured": True, "lag_s": "error: OperationalError"})


def test_exports_are_counted_by_outcome_with_their_rows(sqlite_url, tmp_path):
    """A written export counts as ok with its rows; one that fails inside (no tickets table) as an error."""
    scope = Scope(municipality_id=uuid.uuid4(), role="manager", username="metrics-test")
    before, _ = parse(metrics.exposition()[0].decode())
    result = export_tickets(get_engine(sqlite_url), scope, TicketFilters(), "csv", tmp_path / "ok.csv", channel="cli")
    broken = make_engine(f"sqlite:///{tmp_path / 'no-schema.sqlite3'}")
    with pytest.raises(Exception):
        export_tickets(broken, scope, TicketFilters(), "xlsx", tmp_path / "failed.xlsx", channel="cli")
    broken.dispose()
    after, _ = parse(metrics.exposition()[0].decode())

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("opsdash_exports_total", format="csv", channel="cli", outcome="ok") == 1
    assert moved("opsdash_exports_total", format="xlsx", channel="cli", outcome="error") == 1
    assert moved("opsdash_export_rows_count", format="csv", channel="cli") == 1
    assert moved("opsdash_export_rows_sum", format="csv", channel="cli") == result.row_count
    assert moved("opsdash_export_seconds_count", format="xlsx", channel="cli") == 0  # failures have no duration
    assert not (tmp_path / "failed.xlsx").exists()


def exposed_sample_names() -> set[str]:
    """Every sample name a served process exposes (the scrape-time collectors fed stand-in figures)."""
    registry = CollectorRegistry()
    pool = SimpleNamespace(pool=SimpleNamespace(checkedout=lambda: 1, size=lambda: 10))
    for collector in (metrics.HubCollector(lambda: {"counters": {"received": 1}, "dropped": {"bad_json": 1},
                                                    "status": "live"}),
                      metrics.PoolCollector(lambda: {"primary": pool}), metrics.LaneCollector(workers.snapshot),
                      metrics.ReplicaCollector(lambda: SimpleNamespace(snapshot=lambda: {
                          "configured": True, "lag_s": 0.5, "reads": {"replica": 2}}))):
        registry.register(collector)
    names = {sample.name for family in registry.collect() for sample in family.samples}
    for family in metrics.REGISTRY.collect():
        names |= {family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    return names


def test_the_grafana_dashboard_uses_only_series_the_server_exposes_and_every_metric():
    dashboard = json.loads((ROOT / "docs" / "grafana-opsdash.json").read_text(encoding="utf-8"))
    exprs = " ".join(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
    used = set(re.findall(r"\bopsdash_[a-z_]+", exprs))
    exposed = exposed_sample_names()
    assert used <= exposed, f"the dashboard queries series nobody exposes: {sorted(used - exposed)}"
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exposed}
    unused = {f for f in families if not any(u == f or u.startswith(f + "_") for u in used)}
    assert not unused, f"metrics no panel shows: {sorted(unused)}"


# ---- a served process ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(pg_url, redis_url, tmp_path_factory, module_random_seed):
    with seeded_server(pg_url, tmp_path_factory.mktemp("metrics"), dict(tickets=120, wards=2, municipalities=1),
                       random_seed=module_random_seed, redis_url=redis_url) as (result, server):
        # The seeded names recur across runs and modules: no earlier run's sign-in failures count here.
        client = redis.Redis.from_url(redis_url)
        for user in result.users:
            account_key, _ = throttle_keys(user["username"], "")
            client.delete(*client.scan_iter(match=account_key.replace("{", "[{]").replace("}", "[}]") + "*"), "x")
        client.close()
        yield get_engine(pg_url), result, server


def signed_in(server, result, role: str):
    user = user_of(result, role)
    http, response = sign_in(server.url, user["username"], user["password"])
    assert response.status_code == 302 and "/login" not in response.headers["Location"], response.headers
    return user, http


def page(http: requests.Session, url: str) -> tuple[str, str | None]:
    """(the page's HTML, its Bokeh session token)."""
    response = http.get(url, timeout=60)
    match = TOKEN_RE.search(response.text)
    return response.text, match.group(1) if match else None


@pytest.mark.slow
def test_metrics_need_the_operator_token_and_never_show_a_figure_without_it(served):
    _, _, server = served
    for token, scheme in [(None, "Bearer"), ("wrong-token-0123456789", "Bearer"), (TEST_METRICS_TOKEN, "Basic"),
                          (TEST_METRICS_TOKEN + "x", "Bearer"), ("", "Bearer")]:
        response = metrics_response(server.url, token, scheme)
        assert response.status_code == 401, (token, scheme, response.status_code)
        assert "opsdash_" not in response.text and "process=" not in response.text
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert metrics_response(server.url).status_code == 200


@pytest.mark.slow
def test_without_an_operator_token_there_is_no_metrics_route(opsdash_server, pg_url):
    server = opsdash_server(pg_url, env={"OPSDASH_METRICS_TOKEN": ""})
    for token in (None, TEST_METRICS_TOKEN):
        response = metrics_response(server.url, token)
        assert response.status_code == 404 and "opsdash_" not in response.text
    assert requests.get(f"{server.url}/health", timeout=30).json() == {"status": "ok"}


@pytest.mark.slow
def test_metrics_move_with_a_scripted_workload(served):
    engine, result, server = served
    municipality = result.municipalities[0]["id"]
    ward = result.municipalities[0]["wards"][0]
    before = scrape(server.url)

    # Sign-ins: one wrong password, then the right one (twice: the second sign-in's figures come from the cache).
    manager = user_of(result, "manager")
    assert "error=" in sign_in(server.url, manager["username"], "not-the-password")[1].headers["Location"]
    _, http = signed_in(server, result, "manager")
    wait_until(lambda: total(scrape(server.url), "opsdash_query_seconds_count")
               >= total(before, "opsdash_query_seconds_count") + 2, what="the sign-in's prefetch queries")
    _, second = signed_in(server, result, "manager")
    # Throttled: more wrong passwords for one account than OPSDASH_LOGIN_MAX_ATTEMPTS (5) allows.
    guessed = f"metrics-{uuid.uuid4().hex[:10]}"
    create_user(engine, guessed, "a-long-enough-password", role="manager", municipality_id=municipality)
    for _ in range(7):
        sign_in(server.url, guessed, "guess")

    # A dashboard open (the page builds its session: live registration, periodic drain), then live events.
    _, token = page(http, f"{server.url}/")
    assert token, "no dashboard page"
    assert value(scrape(server.url), "opsdash_sessions_open", role="manager") >= 1
    tickets = [add_ticket(engine, municipality, ward) for _ in range(3)]
    gbv = add_ticket(engine, municipality, ward, category="gbv", description="metrics test gbv ticket")
    stamp = (datetime.now(timezone.utc) - timedelta(seconds=2)).isoformat()
    for ticket in tickets:
        publish(server.redis_url, municipality, {**ticketing_message("ticket_updated", ward, ticket["tracking_number"]),
                                                 "occurred_at": stamp})
    publish(server.redis_url, municipality, ticketing_message("ticket_updated", ward, gbv["tracking_number"],
                                                              category="gbv"))
    client = redis.Redis.from_url(server.redis_url)
    client.publish(channel_for(municipality), "{not json")
    client.close()

    # An export through the streaming route.
    link = export_link(server.cookie_secret, manager["username"], "csv", TicketFilters())
    exported = http.get(f"{server.url}/{link[2:]}", timeout=60)
    assert exported.status_code == 200
    rows = exported.content.decode("utf-8-sig").count("\r\n") - 1

    def moved() -> bool:
        now = scrape(server.url)
        return (value(now, "opsdash_live_events_delivered_total") >= value(before, "opsdash_live_events_delivered_total") + 3
                and value(now, "opsdash_live_publish_to_session_seconds_count")
                >= value(before, "opsdash_live_publish_to_session_seconds_count") + 3)

    wait_until(moved, timeout=15, what="the session to drain the events")
    after = scrape(server.url)

    def grew(name: str, by: float = 1, **labels: str) -> float:
        change = value(after, name, **labels) - value(before, name, **labels)
        assert change >= by, f"{name}{labels} moved by {change}, expected at least {by}"
        return change

    grew("opsdash_sign_ins_total", 1, outcome="failed")
    grew("opsdash_sign_ins_total", 2, outcome="ok")
    grew("opsdash_sign_ins_total", 1, outcome="throttled")
    grew("opsdash_sign_in_throttled_total", 1)
    assert grew("opsdash_live_events_received_total", 5) < 10_000
    grew("opsdash_live_events_dropped_total", 1, reason="sensitive_category")
    grew("opsdash_live_events_dropped_total", 1, reason="bad_json")
    grew("opsdash_live_queue_depth_count", 1)
    # From the events' occurred_at, two seconds before they were published: every one took at least that.
    assert value(after, "opsdash_live_publish_to_session_seconds_bucket", le="1.0") == \
        value(before, "opsdash_live_publish_to_session_seconds_bucket", le="1.0")
    grew("opsdash_query_cache_misses_total", 1, kind="figures")
    grew("opsdash_query_cache_hits_total", 1, kind="figures")
    grew("opsdash_query_seconds_count", 1, kind="figures")
    grew("opsdash_exports_total", 1, format="csv", channel="http", outcome="ok")
    grew("opsdash_export_seconds_count", 1, format="csv", channel="http")
    assert grew("opsdash_export_rows_sum", rows, format="csv", channel="http") == rows
    assert value(after, "opsdash_db_pool_size", database="primary") == 10
    assert ("opsdash_db_pool_in_use", (("database", "primary"),)) in after
    assert value(after, "opsdash_live_hub_up") == 1
    assert ("opsdash_worker_tasks", (("lane", "short"), ("state", "running"))) in after


# ---- the Operations page ---------------------------------------------------------------------------

@pytest.mark.slow
def test_the_operations_page_shows_an_admin_this_processes_figures(served):
    _, result, server = served
    _, http = signed_in(server, result, "admin")
    _, dashboard_token = page(http, f"{server.url}/")
    assert "view=operations" in pull_document(server.url, http.cookies.get_dict(), dashboard_token)
    _, token = page(http, f"{server.url}/?view=operations")
    document = pull_document(server.url, http.cookies.get_dict(), token)
    for shown in ("Operations", "Open sessions", "Sign-ins", "opsdash_sign_ins", "opsdash_live_events_received",
                  "opsdash_query_seconds", "opsdash_db_pool_in_use", "Throttled attempts"):
        assert shown in document, f"{shown!r} missing from the Operations page"


@pytest.mark.slow
@pytest.mark.parametrize("role", ["manager", "ward_councillor"])
def test_nobody_but_an_admin_gets_the_operations_page_or_its_link(served, role):
    _, result, server = served
    _, http = signed_in(server, result, role)
    _, token = page(http, f"{server.url}/")
    assert "view=operations" not in pull_document(server.url, http.cookies.get_dict(), token)
    for forged in ("?view=operations", "?view=OPERATIONS", "?view=%20operations%20", "?view=operations&view=dashboard",
                   "?status=open&view=operations"):
        _, token = page(http, f"{server.url}/{forged}")
        document = pull_document(server.url, http.cookies.get_dict(), token)
        assert "The Operations page is for administrators" in document, forged
        for figure in ("opsdash_", "Open sessions", "Sign-ins", "Throttled attempts"):
            assert figure not in document, f"{figure!r} reached a {role} through {forged}"


@pytest.mark.slow
def test_a_signed_out_browser_gets_the_sign_in_page_not_the_operations_page(served):
    _, _, server = served
    response = requests.get(f"{server.url}/?view=operations", timeout=30)
    assert "/login" in response.url and "opsdash_" not in response.text
