"""The served web layer under attack (issue 15): sessions that end, signed tokens, CSRF, cookies, headers, /health.

One real ``opsdash serve`` on PostgreSQL with Redis for the module; each test signs in users of its own.
"""
from __future__ import annotations

import json
import time
import uuid
from http.cookies import SimpleCookie

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
import requests
import tornado.web
from bokeh.util.token import generate_jwt_token, get_token_payload

from data.db import get_engine

from .helpers.databases import user_of
from .helpers.servers import seeded_server
from .helpers.web import origin_of, page_token, pull_document, sign_in, socket_closed_after

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web(pg_url, redis_url, tmp_path_factory, module_random_seed):
    with seeded_server(pg_url, tmp_path_factory.mktemp("web"), dict(tickets=120, wards=2, municipalities=2),
                       random_seed=module_random_seed, redis_url=redis_url) as (result, server):
        yield get_engine(pg_url), result, server


def signed_in(server, result, role: str, municipality: int = 0):
    user = user_of(result, role, municipality=municipality)
    http, response = sign_in(server.url, user["username"], user["password"])
    assert response.status_code == 302 and "/login" not in response.headers["Location"], response.headers
    return user, http


# ---- finding 3: sign-out ends the session (page, websocket, export) -------------------------------

def test_signed_out_cookie_cannot_open_the_dashboard_websocket_or_an_export(web):
    from dashboard_app.export_route import export_link
    from data.filters import TicketFilters

    engine, result, server = web
    user, http = signed_in(server, result, "manager")
    old_cookies = http.cookies.get_dict()
    token = page_token(http, server.url)
    link = export_link(server.cookie_secret, user["username"], "csv", TicketFilters())
    assert http.get(f"{server.url}/{link[2:]}", timeout=60).status_code == 200
    assert user["username"] in pull_document(server.url, old_cookies, token)

    http.get(f"{server.url}/logout", timeout=30)
    replay = requests.Session()
    replay.cookies.update(old_cookies)
    page = replay.get(f"{server.url}/", timeout=60)
    assert "/login" in page.url, "the old cookie still opens the dashboard"
    assert pull_document(server.url, old_cookies, token).startswith("refused"), "the old cookie still streams"
    assert replay.get(f"{server.url}/{link[2:]}", timeout=60).status_code == 401, "the old cookie still exports"


# ---- finding 4: signed Bokeh tokens; the websocket's user is the cookie's user --------------------

def test_websocket_refuses_a_hand_made_token_carrying_another_users_old_cookie(web):
    engine, result, server = web
    councillor, http = signed_in(server, result, "ward_councillor", municipality=1)
    manager = user_of(result, "manager", municipality=0)
    three_days_ago = lambda: time.time() - 3 * 86400  # noqa: E731
    stale = tornado.web.create_signed_value(server.cookie_secret, "user", manager["username"],
                                            clock=three_days_ago).decode()
    forged = generate_jwt_token(
        "forged" + uuid.uuid4().hex, signed=False, secret_key=None,
        extra_payload={"headers": {}, "cookies": {"user": stale}, "arguments": {}})
    answer = pull_document(server.url, http.cookies.get_dict(), forged)
    assert manager["username"] not in answer
    assert answer.startswith("refused"), answer[:200]


# ---- finding 5: the page's token does not carry the HttpOnly cookies ------------------------------

def test_page_token_does_not_carry_the_httponly_sign_in_cookies(web):
    engine, result, server = web
    _, http = signed_in(server, result, "admin")
    token = page_token(http, server.url)
    payload = json.dumps(get_token_payload(token))
    for name, value in http.cookies.get_dict().items():
        if len(value) < 16:  # a landing path like "./", not a credential
            continue
        assert value.strip('"') not in payload, f"the page's session token carries the {name} cookie"


# ---- finding 6: login CSRF, cookie attributes ----------------------------------------------------

def test_sign_in_refuses_a_cross_site_post_even_with_the_right_password(web):
    engine, result, server = web
    user = user_of(result, "manager", municipality=1)
    http, response = sign_in(server.url, user["username"], user["password"], origin="https://evil.example")
    assert response.status_code == 403
    assert "user" not in http.cookies.get_dict()
    # A form posted without the page's token (a hand-made request) is refused as well.
    bare = requests.post(f"{server.url}/login", data={"username": user["username"], "password": user["password"]},
                         headers={"Origin": origin_of(server.url)}, allow_redirects=False, timeout=30)
    assert bare.status_code == 403 and "user" not in bare.cookies.get_dict()


def test_sign_in_cookies_are_httponly_and_samesite_lax(web):
    engine, result, server = web
    user = user_of(result, "admin", municipality=1)
    _, response = sign_in(server.url, user["username"], user["password"])
    jar = SimpleCookie()
    for header in response.raw.headers.getlist("Set-Cookie"):
        jar.load(header)
    assert "user" in jar
    for name, morsel in jar.items():
        if morsel.value:  # cleared cookies carry nothing
            assert morsel["httponly"] and morsel["samesite"] == "Lax", (name, morsel.OutputString())
            assert not morsel["secure"]  # plain HTTP here; OPSDASH_HTTPS=1 adds Secure (test_settings)


# ---- finding 7: security headers on every HTML page -----------------------------------------------

@pytest.mark.parametrize("path", ["/", "/login", "/logout"])
def test_html_pages_send_csp_frame_and_sniffing_headers(web, path):
    engine, result, server = web
    _, http = signed_in(server, result, "manager", municipality=1)
    response = http.get(f"{server.url}{path}", timeout=60)
    assert response.headers["Content-Type"].startswith("text/html")
    csp = response.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, csp
    script_sources = next(d for d in csp.split(";") if d.strip().startswith("script-src")).split()[1:]
    assert all(source.startswith("'") or source == "blob:" for source in script_sources), csp  # no other host
    assert response.headers.get("X-Frame-Options") == "DENY"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Referrer-Policy") == "same-origin"


# ---- finding 9: /health tells the public only ok/degraded ----------------------------------------

def test_health_tells_the_public_only_ok_and_the_operator_token_the_details(web):
    engine, result, server = web
    public = requests.get(f"{server.url}/health", timeout=10)
    assert public.status_code == 200 and public.json() == {"status": "ok"}
    wrong = requests.get(f"{server.url}/health", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.json() == {"status": "ok"}
    details = server.health()  # Authorization: Bearer <OPSDASH_METRICS_TOKEN>
    assert details["status"] == "ok" and details["database"] == "ok" and "hub" in details["live"]


# ---- finding 10: a malformed export token ---------------------------------------------------------

def test_a_malformed_export_token_gets_a_400_and_no_traceback_in_the_log(web):
    engine, result, server = web
    _, http = signed_in(server, result, "manager")
    response = http.get(f"{server.url}/export/download?token=%FF%FE", timeout=30)
    assert response.status_code == 400 and "Traceback" not in response.text
    assert "not valid" in response.text
    assert "Invalid unicode in token" not in server.log(tail=20_000)


# ---- finding 3: every way a session ends --------------------------------------------------------

@pytest.mark.parametrize("how", ["password", "disable", "sign-out"])
def test_password_change_disabling_and_sign_out_everywhere_end_every_session_of_the_user(web, how, tmp_path):
    from data.users import create_user

    from .helpers.servers import run_opsdash

    engine, result, server = web
    manager = user_of(result, "manager", municipality=1)
    name = f"revoked-{how}-{uuid.uuid4().hex[:6]}"
    create_user(engine, name, "a-long-enough-password", role="manager", municipality_id=manager["municipality_id"])
    tabs = [sign_in(server.url, name, "a-long-enough-password")[0] for _ in range(2)]  # two browsers
    tokens = [page_token(tab, server.url) for tab in tabs]
    args = {"password": ("user", "password", name), "disable": ("user", "disable", name),
            "sign-out": ("user", "sign-out", name)}[how]
    done = run_opsdash(*args, database_url=server.database_url, cwd=tmp_path, stdin="another-long-password\n")
    assert done.returncode == 0, done.stderr
    assert "2 session(s)" in done.stdout and "signed out" in done.stdout
    for tab, token in zip(tabs, tokens):
        assert "/login" in tab.get(f"{server.url}/", timeout=60).url
        assert pull_document(server.url, tab.cookies.get_dict(), token).startswith("refused")


def test_a_revoked_sessions_open_dashboard_is_closed_within_a_minute(web):
    from data.web_sessions import revoke_user_sessions

    engine, result, server = web
    user, http = signed_in(server, result, "ward_councillor", municipality=0)
    token = page_token(http, server.url)
    closed_after = socket_closed_after(server.url, http.cookies.get_dict(), token,
                                       lambda: revoke_user_sessions(engine, user["username"]))
    assert closed_after is not None and closed_after < 60, closed_after
