"""Unauthenticated requests cannot crash, hang or run code (issue 15, findings 1 and 2).

The sweep takes the route table the server logs at start (every pattern Bokeh's, Panel's and our
handlers mounted) and sends each route hostile paths and parameters, without and with forged
cookies: every answer is below 500 (hostile paths: a 4xx), carries no traceback, and the process
stays up.
"""
from __future__ import annotations

import re

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import psutil
import pytest
import requests

from .helpers.databases import user_of
from .helpers.servers import seeded_server
from .helpers.web import sign_in

pytestmark = pytest.mark.slow
ZEN = "Beautiful is better than ugly"


@pytest.fixture(scope="module")
def served(pg_url, tmp_path_factory, module_random_seed):
    with seeded_server(pg_url, tmp_path_factory.mktemp("routes"), dict(tickets=20, wards=1, municipalities=1),
                       random_seed=module_random_seed) as s:
        yield s


def test_component_route_never_imports_a_module_named_in_the_url(served):
    result, server = served
    for path in ("/components/this/x/_css/a", "/components/venv.__main__/x/_css/a",
                 "/components/antigravity/x/_css/a", "/components/panel.__main__/x/_css/a"):
        response = requests.get(f"{server.url}{path}", timeout=30)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert server.process.poll() is None, f"{path} ended the server:\n{server.log()}"
    assert ZEN not in server.log(tail=10**6), "a URL ran a module's import-time code"
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def test_cookie_secret_is_in_no_command_line(served, pg_url, tmp_path):
    """Not in what `opsdash serve` hands Panel, not in the documented `panel serve` commands, not in `ps`."""
    from dashboard_app.cli import panel_serve_argv

    from .helpers.servers import ROOT, TEST_COOKIE_SECRET, OpsDashServer

    assert not [a for a in panel_serve_argv("127.0.0.1", 5006, ()) if "secret" in a.lower()]
    for doc in ("README.md", "docs/security.md", "docs/deployment.md"):
        assert "--cookie-secret" not in (ROOT / doc).read_text(), f"{doc} documents the secret on a command line"
    result, server = served
    panel_way = OpsDashServer(database_url=pg_url, log_dir=tmp_path, panel_convention=True)
    panel_way.start()
    try:
        for pid in (server.process.pid, panel_way.process.pid):
            process = psutil.Process(pid)
            for each in (process, *process.children(recursive=True)):
                assert TEST_COOKIE_SECRET not in " ".join(each.cmdline())
    finally:
        panel_way.stop()


HOSTILE_SEGMENTS = ["../../../../etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "this/x/_css/a",
                    "venv.__main__/x/_css/a", "panel.__main__/x/_resources", "%FF%FE", "%00", "x" * 4000,
                    "%3Cscript%3Ealert(1)%3C%2Fscript%3E", ""]
HOSTILE_QUERY = ("?token=%FF%FE&next=%2F%2Fevil.example&error=%3Cscript%3E&bokeh-session-id=%FF"
                 "&bokeh-autoload-element=%FF&bokeh-absolute-url=javascript:alert(1)&theme=%FF&ward=%FF")
HOSTILE_COOKIES = [{}, {"user": "garbage", "opsdash_session": "%FF%FE", "id_token": "2|1:0|10:1|8:id_token|4:eA==|x"}]


def served_routes(log: str) -> list[str]:
    """The route table the server logged at start (``panel_fence``: every pattern Tornado routes)."""
    match = re.search(r"serving routes: (.+)", log)
    assert match, "the server did not log its route table"
    return match.group(1).split()


def concrete_paths(pattern: str) -> list[str]:
    """The pattern as a plain path, and with each of its groups filled with every hostile segment."""
    plain = pattern.lstrip("^").rstrip("$").replace("\\.", ".").replace("/?", "/")
    if "(" not in plain:
        return [plain, plain + "/" + HOSTILE_SEGMENTS[0]]
    return [re.sub(r"\([^)]*\)", segment, plain) for segment in HOSTILE_SEGMENTS]


def test_hostile_requests_to_every_route_get_a_4xx_and_the_server_stays_up(served):
    result, server = served
    routes = served_routes(server.log(tail=10**6))
    assert {"/health$", "/logout$", "/export/download$", "/components/(.*)$", "/login$"} <= set(routes), routes
    answers: list[tuple[str, str, int]] = []
    for pattern in routes:
        for path in concrete_paths(pattern):
            for cookies in HOSTILE_COOKIES:
                for method in ("GET", "POST"):
                    url = f"{server.url}{path}{HOSTILE_QUERY}"
                    response = requests.request(method, url, cookies=cookies, timeout=20, allow_redirects=False,
                                                data={"username": "x", "password": "y"} if method == "POST" else None)
                    answers.append((method, path[:80], response.status_code))
                    assert response.status_code < 500, (method, path[:200], response.status_code, response.text[:300])
                    assert "Traceback" not in response.text
                    if response.is_redirect:  # only ever to the sign-in form
                        assert "login" in response.headers["Location"], (path, response.headers["Location"])
                    assert server.process.poll() is None, f"{method} {path[:200]} ended the server"
    assert len(answers) > 200
    log = server.log(tail=10**6)
    assert "Traceback" not in log and ZEN not in log, log[-3000:]
    # Hostile paths are refused: a 4xx (or the sign-in redirect), never a page or a file.
    filled = [a for a in answers if any(s and s[:20] in a[1] for s in HOSTILE_SEGMENTS)]
    assert filled and all(400 <= code < 500 or code == 302 for _, _, code in filled), \
        sorted({a for a in filled if not 400 <= a[2] < 500})[:20]
    user = user_of(result, "manager")
    assert sign_in(server.url, user["username"], user["password"])[1].status_code == 302  # still serving


def test_the_log_of_a_server_that_signed_in_exported_failed_and_signed_out_holds_no_secret(served):
    from dashboard_app.export_route import export_link
    from data.filters import TicketFilters

    from .helpers.servers import TEST_COOKIE_SECRET, TEST_METRICS_TOKEN

    result, server = served
    user = user_of(result, "manager")
    wrong_password = "wrong-" + user["password"][::-1]
    sign_in(server.url, user["username"], wrong_password)
    http, _ = sign_in(server.url, user["username"], user["password"])
    cookies = dict(http.cookies.get_dict())
    http.get(f"{server.url}/", timeout=60)
    link = export_link(TEST_COOKIE_SECRET, user["username"], "csv", TicketFilters())
    assert http.get(f"{server.url}/{link[2:]}", timeout=60).status_code == 200
    assert http.get(f"{server.url}/export/download?token=%FF%FE", timeout=30).status_code == 400
    assert http.get(f"{server.url}/export/download?token=x.y", timeout=30).status_code == 403
    http.get(f"{server.url}/health", headers={"Authorization": f"Bearer {TEST_METRICS_TOKEN}"}, timeout=10)
    http.get(f"{server.url}/logout", timeout=30)
    requests.get(f"{server.url}/", cookies=cookies, timeout=30)  # the signed-out cookie, refused
    log = server.log(tail=10**7)
    assert "sign-in: " + user["username"] in log  # the log did record the journey
    secrets_ = {"cookie secret": TEST_COOKIE_SECRET, "operator token": TEST_METRICS_TOKEN,
                "password": user["password"], "wrong password": wrong_password,
                **{f"{name} cookie": value.strip('"') for name, value in cookies.items() if len(value) >= 16}}
    for what, value in secrets_.items():
        assert value not in log, f"the log holds the {what}"
        signature = value.rsplit("|", 1)[-1]
        assert len(signature) < 16 or signature not in log, f"the log holds the {what}'s signature"
