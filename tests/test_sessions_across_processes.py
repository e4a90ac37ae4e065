"""Sign-in throttling and sign-outs across server processes through one Redis (issue 19.5).

Two ``opsdash serve`` processes share a database and a Redis, as behind a load
balancer: a lockout earned on one holds on the other, and a sign-out on one
closes the same sign-in's open dashboard on the other at once (the Redis
announcement), not only at that page's next session check (every
``SESSION_CHECK_MS``, 20 s).
"""
from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
import redis
import requests

from dashboard_app.auth import GENERIC_ERROR, THROTTLED_ERROR
from dashboard_app.throttle import LoginThrottle, throttle_keys
from dashboard_app.web_session import SESSION_CHECK_MS, RevocationWatch
from data.bus import bus_for
from data.db import get_engine
from data.seed import seed
from data.settings import current_settings
from data.users import create_user
from data.web_sessions import REVOKED_CHANNEL, revoke_session, revoked_keys, session_key, start_session

from .helpers.live import until
from .helpers.web import page_token, pull_document, sign_in, socket_closed_after

pytestmark = pytest.mark.slow
PASSWORD = "a-long-enough-password"


@pytest.fixture(scope="module")
def municipality(pg_url, module_random_seed):
    engine = get_engine(pg_url)
    result = seed(engine, tickets=40, wards=1, municipalities=1, random_seed=module_random_seed)
    return engine, result.municipalities[0]["id"]


def new_user(municipality) -> str:
    engine, muni = municipality
    name = f"shared-{uuid.uuid4().hex[:10]}"
    create_user(engine, name, PASSWORD, role="manager", municipality_id=muni)
    return name


def error_of(server, username: str, password: str) -> str | None:
    _, response = sign_in(server.url, username, password)
    assert response.status_code == 302, response.status_code
    return (parse_qs(urlsplit(response.headers["Location"]).query).get("error") or [None])[0]


def test_revocation_announcements_name_table_keys_only():
    assert revoked_keys('{"revoked": ["' + "a" * 64 + '", "short", 5]}') == ["a" * 64]
    for junk in ("", "{", "[]", '{"revoked": "x"}', b"\xff", '{"revoked": null}'):
        assert revoked_keys(junk) == []
    assert not REVOKED_CHANNEL.startswith("dashboard:"), "the live hub must never see sign-outs"


def test_a_successful_sign_in_gives_its_slot_back_in_redis_without_a_false_alarm(redis_url, caplog):
    """Found by the JSON-log run: the release script's single answer was read as Redis failing, so every
    successful sign-in logged "Redis unavailable" (the release itself had run in Redis)."""
    throttle = LoginThrottle(3, 60, redis_url)
    name, address = f"release-{uuid.uuid4().hex[:10]}", "10.0.0.7"
    assert throttle.reserve(name, address) and throttle.reserve(name, address)
    with caplog.at_level("WARNING", logger="opsdash.auth"):
        throttle.succeeded(name, address)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    account, pair = throttle_keys(name, address)
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get(pair) is None and int(client.get(account)) == 1
    finally:
        client.close()
    assert all(throttle.reserve(name, address) for _ in range(3)), "the failures before the success still count"
    assert not throttle.reserve(name, address)


def test_without_redis_a_sign_out_ends_this_processes_open_pages_at_once(sqlite_url, monkeypatch):
    """The in-process fallback: the same announcement, on the in-process bus."""
    monkeypatch.delenv("OPSDASH_REDIS_URL", raising=False)
    current_settings.cache_clear()
    engine = get_engine(sqlite_url)
    session_id = start_session(engine, f"nobody-{uuid.uuid4().hex[:8]}", timedelta(hours=1))
    other_id = start_session(engine, f"nobody-{uuid.uuid4().hex[:8]}", timedelta(hours=1))

    async def scenario() -> list[str]:
        watch, ended = RevocationWatch(), []
        watch.watch(session_key(session_id), lambda: ended.append("revoked"))
        watch.watch(session_key(other_id), lambda: ended.append("other"))
        subscribers = bus_for(None).subscriber_count
        watch.start(None)
        try:
            await until(lambda: bus_for(None).subscriber_count > subscribers, what="the watch to subscribe")
            await asyncio.get_running_loop().run_in_executor(None, revoke_session, engine, session_id)
            await until(lambda: ended, timeout=5, what="the open page to end")
            await asyncio.sleep(0.2)
        finally:
            await watch.stop()
        assert watch.watched == 1  # the other sign-in's page still open
        return ended

    try:
        assert asyncio.run(scenario()) == ["revoked"]
    finally:
        current_settings.cache_clear()


def test_a_lockout_and_a_sign_out_on_one_process_hold_on_the_other(opsdash_server, pg_url, redis_url, municipality):
    env = {"OPSDASH_LOGIN_MAX_ATTEMPTS": "3"}
    first = opsdash_server(pg_url, redis_url=redis_url, env=env)
    second = opsdash_server(pg_url, redis_url=redis_url, env=env)

    # Lockout: three wrong passwords on the first process; the right one is refused on the second.
    locked = new_user(municipality)
    assert [error_of(first, locked, "wrong") for _ in range(3)] == [GENERIC_ERROR] * 3
    assert error_of(second, locked, PASSWORD) == THROTTLED_ERROR
    assert error_of(first, locked, PASSWORD) == THROTTLED_ERROR

    # Sign-out: signed in on the first, a dashboard open on the second; signing out on the first
    # closes the second's page at once (a page checks its record only every SESSION_CHECK_MS).
    name = new_user(municipality)
    http, response = sign_in(first.url, name, PASSWORD)
    assert "/login" not in response.headers["Location"]
    cookies = http.cookies.get_dict()
    token = page_token(http, second.url)
    assert token and name in pull_document(second.url, cookies, token), "the sign-in does not open the other process"
    token = page_token(http, second.url)
    closed_after = socket_closed_after(second.url, cookies, token,
                                       lambda: http.get(f"{first.url}/logout", timeout=30), limit=30)
    assert closed_after is not None, "the other process kept the signed-out dashboard open"
    # Bound well under one session check: the page was built less than a second before the sign-out.
    assert closed_after < SESSION_CHECK_MS / 1000 / 2, closed_after
    assert "closing a dashboard whose sign-in has ended" in second.log(20_000)
    replay = requests.Session()
    replay.cookies.update(cookies)
    assert "/login" in replay.get(f"{second.url}/", timeout=60).url
