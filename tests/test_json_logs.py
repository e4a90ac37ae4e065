"""Structured logs (issue 19.2): ``OPSDASH_LOG_FORMAT=json`` gives one JSON object per line, and a whole
realistic run (sign-ins, dashboards, an export, live events with a GBV ticket) logs no secret and no GBV text."""
from __future__ import annotations

import json
import logging
import re
from urllib.parse import unquote

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
import redis
from tornado.web import decode_signed_value

from dashboard_app.export_route import export_link
from dashboard_app.log_format import JsonFormatter, Redactor
from data.db import get_engine
from data.events import channel_for
from data.filters import TicketFilters
from data.seed import seed
from data.settings import Settings
from data.users import create_user

from .helpers.databases import user_of
from .helpers.live import add_ticket, publish, ticketing_message, wait_until
from .helpers.metrics import metrics_response
from .helpers.servers import TEST_COOKIE_SECRET, TEST_METRICS_TOKEN, OpsDashServer
from .helpers.web import page_token, pull_document, sign_in

pytestmark = pytest.mark.slow
GBV_TEXT = "Zanele-survivor-statement-7f3a9c"
WRONG_PASSWORD = "wrong-Pa55word-91d2e7"
PASSWORD = "right-Pa55word-4b8c0a"
KEYS = {"time", "level", "logger", "message"}


def test_the_formatter_writes_one_object_and_removes_secrets_that_slipped_into_a_message():
    settings = Settings(cookie_secret="c" * 40, metrics_token="m" * 20,
                        database_url="postgresql+psycopg://app:db-Pa55@host/db", redis_url="redis://:rd-Pa55@host:6379/0")
    formatter = JsonFormatter(Redactor(settings))
    record = logging.LogRecord("opsdash.test", logging.WARNING, __file__, 1,
                               "secret %s token %s db db-Pa55 redis rd-Pa55 Authorization: Bearer abc.def "
                               "GET /export/download?token=xyz&fmt=csv", ("c" * 40, "m" * 20), None)
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert KEYS <= set(entry) and entry["level"] == "WARNING" and entry["logger"] == "opsdash.test"
    for secret in ("c" * 40, "m" * 20, "db-Pa55", "rd-Pa55", "abc.def", "xyz"):
        assert secret not in line, secret
    assert "token=***" in entry["message"]


def test_a_whole_run_logs_json_lines_with_no_secret_and_no_gbv_text(pg_url, redis_url, tmp_path, module_random_seed):
    engine = get_engine(pg_url)
    result = seed(engine, tickets=80, wards=2, municipalities=1, random_seed=module_random_seed)
    municipality = result.municipalities[0]["id"]
    ward = result.municipalities[0]["wards"][0]
    username = f"json-logs-{module_random_seed}-{tmp_path.name[-6:]}"
    create_user(engine, username, PASSWORD, role="manager", municipality_id=municipality)
    gbv = add_ticket(engine, municipality, ward, category="gbv", description=GBV_TEXT, address=GBV_TEXT)
    flagged = add_ticket(engine, municipality, ward, sensitive=True, description=GBV_TEXT)
    visible = add_ticket(engine, municipality, ward)

    server = OpsDashServer(pg_url, tmp_path, redis_url=redis_url, env={"OPSDASH_LOG_FORMAT": "json",
                                                                       "OPSDASH_LOG_LEVEL": "DEBUG"})
    server.start()
    secrets: dict[str, str] = {"wrong password": WRONG_PASSWORD, "password": PASSWORD,
                               "cookie secret": TEST_COOKIE_SECRET, "metrics token": TEST_METRICS_TOKEN}
    try:
        assert "error=" in sign_in(server.url, username, WRONG_PASSWORD)[1].headers["Location"]
        http, response = sign_in(server.url, username, PASSWORD)
        assert "/login" not in response.headers["Location"]
        for name, cookie in http.cookies.get_dict().items():
            if len(cookie) >= 16:
                secrets[f"cookie {name}"] = cookie.strip('"')
                decoded = decode_signed_value(TEST_COOKIE_SECRET, name, cookie.strip('"'))
                if decoded and name == "opsdash_session":
                    secrets["session id"] = decoded.decode()
        token = page_token(http, server.url)
        secrets["page token"] = token
        assert username in pull_document(server.url, http.cookies.get_dict(), token)
        http.get(f"{server.url}/?q={GBV_TEXT}", timeout=60)  # someone searching for the text: a URL in the access log
        link = export_link(TEST_COOKIE_SECRET, username, "csv", TicketFilters(search=GBV_TEXT[:12]))
        secrets["export token"] = unquote(link.split("token=", 1)[1])
        assert http.get(f"{server.url}/{link[2:]}", timeout=60).status_code == 200
        publish(redis_url, municipality, ticketing_message("ticket_created", ward, gbv["tracking_number"],
                                                           category="gbv", description=GBV_TEXT))
        publish(redis_url, municipality, ticketing_message("ticket_updated", ward, flagged["tracking_number"],
                                                           description=GBV_TEXT))
        publish(redis_url, municipality, {"type": "ticket_updated", "is_sensitive": True,
                                          "data": {"tracking_number": "X", "description": GBV_TEXT}, "ward_id": ward})
        client = redis.Redis.from_url(redis_url)
        client.publish(channel_for(municipality), "{" + GBV_TEXT)  # malformed, with the text in it
        client.close()
        publish(redis_url, municipality, ticketing_message("ticket_updated", ward, visible["tracking_number"]))
        assert metrics_response(server.url).status_code == 200
        assert metrics_response(server.url, "wrong-token-0123456789").status_code == 401
        http.get(f"{server.url}/health", headers={"Authorization": f"Bearer {TEST_METRICS_TOKEN}"}, timeout=30)
        wait_until(lambda: server.health()["live"]["hub"]["counters"].get("received", 0) >= 5, what="the events")
        http.get(f"{server.url}/logout", timeout=30)
    finally:
        server.stop()

    text = server.log_path.read_text(encoding="utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a log line is not JSON: {line[:300]!r}")
    assert all(isinstance(e, dict) and KEYS <= set(e) for e in entries), [e for e in entries if KEYS - set(e)][:3]
    for what, secret in secrets.items():
        assert secret and secret not in text, f"the {what} is in the log"
    assert GBV_TEXT not in text and GBV_TEXT[:12] not in text, "the GBV ticket's text is in the log"
    assert gbv["tracking_number"] not in text and flagged["tracking_number"] not in text
    # The lines say who and which request: the sign-in names its user and request, the session's lines their session.
    sign_ins = [e for e in entries if e["message"].startswith("sign-in: ")]
    assert sign_ins and all(e.get("user") == username and e.get("request_id") for e in sign_ins), sign_ins
    assert any(e.get("session") and e.get("user") == username for e in entries), "no line names its session and user"
    assert any(e["logger"] == "opsdash.hub" and "sensitive" in e["message"] for e in entries)
    assert not any(re.search(r"password=|Bearer [^*]", e["message"]) for e in entries)
