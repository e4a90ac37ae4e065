"""A real ``opsdash serve`` process: /health, sign-in through /login, and the ``--demo`` path."""
from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urljoin, urlsplit

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
import requests

from dashboard_app.auth import GENERIC_ERROR
from data.seed import seed

from .helpers.databases import user_of
from .helpers.web import sign_in

pytestmark = pytest.mark.slow
# Bokeh renders into shadow roots, which innerText does not enter: walk them.
ALL_TEXT = """() => { const out = []; const walk = n => { if (n.shadowRoot) walk(n.shadowRoot);
  for (const c of n.childNodes) { if (c.nodeType === 3) out.push(c.textContent);
    else if (!['STYLE', 'SCRIPT'].includes(c.nodeName)) walk(c); } };
  walk(document.body); return out.join(' '); }"""
LOGIN_LINE = re.compile(r"^login: (\S+) / (\S+) \((\w+)(?:, (\S+))?\)$", re.MULTILINE)


def page_text(browser, base_url: str, http: requests.Session, expected: str) -> str:
    """The rendered dashboard for the cookies ``http`` holds, once ``expected`` shows.

    The HTML of a Bokeh server page carries no content (it arrives over the
    websocket), so a real browser renders it.
    """
    response = http.get(f"{base_url}/", timeout=60)
    assert response.status_code == 200 and "/login" not in response.url  # signed in, not bounced to the form
    context = browser.new_context()
    try:
        context.add_cookies([{"name": c.name, "value": c.value, "url": base_url} for c in http.cookies])
        page = context.new_page()
        page.goto(f"{base_url}/", timeout=60_000)
        page.wait_for_function(f"text => ({ALL_TEXT})().includes(text)", arg=expected, timeout=60_000)
        return page.evaluate(ALL_TEXT)
    finally:
        context.close()


@pytest.fixture
def seeded_pg(pg_engine, pg_url, random_seed):
    return pg_url, seed(pg_engine, tickets=200, wards=3, municipalities=2, random_seed=random_seed)


@pytest.mark.browser
def test_health_and_sign_in_show_the_users_own_municipality(opsdash_server, seeded_pg, chromium_browser):
    pg_url, result = seeded_pg
    server = opsdash_server(pg_url)
    health = requests.get(f"{server.url}/health", timeout=10)
    assert health.status_code == 200 and health.headers["Content-Type"].startswith("application/json")
    assert health.json() == {"status": "ok"}  # the details only for the operator token (issue 15)

    anonymous = requests.get(f"{server.url}/", timeout=30)
    assert "/login" in anonymous.url  # no page without signing in

    manager = user_of(result, "manager", municipality=0)
    http, response = sign_in(server.url, manager["username"], manager["password"])
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    ours, theirs = result.municipalities[0]["name"], result.municipalities[1]["name"]
    text = page_text(chromium_browser, server.url, http, ours)
    assert theirs not in text

    councillor = user_of(result, "ward_councillor", municipality=1, ward_index=2)
    http, _ = sign_in(server.url, councillor["username"], councillor["password"])
    text = page_text(chromium_browser, server.url, http, theirs)
    assert councillor["ward_id"] in text and ours not in text


def test_wrong_password_and_unknown_user_get_the_same_generic_error(opsdash_server, seeded_pg):
    pg_url, result = seeded_pg
    server = opsdash_server(pg_url)
    manager = user_of(result, "manager")
    answers = []
    for username, password in ((manager["username"], manager["password"] + "x"),
                               (f"nobody-{uuid.uuid4().hex[:8]}", manager["password"])):
        http, response = sign_in(server.url, username, password)
        assert response.status_code == 302
        answers.append(response.headers["Location"])
        # No session cookie was granted: the page still sends us to the form.
        assert "/login" in http.get(f"{server.url}/", timeout=30).url
    assert answers[0] == answers[1]
    location = urlsplit(urljoin(f"{server.url}/login", answers[0]))
    assert location.path == "/login" and parse_qs(location.query) == {"error": [GENERIC_ERROR]}


@pytest.mark.browser
def test_serve_demo_seeds_a_fresh_directory_and_a_printed_login_works(opsdash_server, tmp_path, chromium_browser):
    workdir = tmp_path / "clone"
    workdir.mkdir()
    server = opsdash_server(None, demo=True, cwd=workdir)
    assert (workdir / "var" / "opsdash.sqlite3").is_file()
    logins = LOGIN_LINE.findall(server.log(tail=10**6))
    roles = {role for _, _, role, _ in logins}
    assert {"admin", "manager", "ward_councillor", "field_worker", "citizen"} <= roles
    assert all(ward for _, _, role, ward in logins if role == "ward_councillor")
    username, password, _, _ = next(login for login in logins if login[2] == "manager")
    http, response = sign_in(server.url, username, password)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    assert username in page_text(chromium_browser, server.url, http, "eThekwini")

    # `make serve` again in the same clone: no second seed, the same logins.
    server.stop()
    again = opsdash_server(None, demo=True, cwd=workdir)
    log = again.log(tail=10**6)
    assert "seeding demo data" not in log and LOGIN_LINE.findall(log) == logins


def test_panel_serve_convention_signs_in_against_the_users_table(opsdash_server, seeded_pg):
    """README: `panel serve dashboard_app/app.py --oauth-provider opsdash ...` works like `opsdash serve`."""
    pg_url, result = seeded_pg
    server = opsdash_server(pg_url, panel_convention=True)
    assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    admin = user_of(result, "admin")
    http, response = sign_in(server.url, admin["username"], admin["password"])
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    assert "/login" not in http.get(f"{server.url}/", timeout=60).url
    _, refused = sign_in(server.url, admin["username"], "not-the-password")
    assert urlsplit(urljoin(f"{server.url}/login", refused.headers["Location"])).path == "/login"
