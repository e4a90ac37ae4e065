"""In Chromium (issue 15): the dashboard works under its CSP, and signing out leaves an old tab without data."""
from __future__ import annotations

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest

from .helpers.browser import browser_sign_in
from .helpers.databases import user_of
from .helpers.servers import seeded_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DISCONNECTED = "Connection to the server was lost"


@pytest.fixture(scope="module")
def site(pg_url, chromium, tmp_path_factory, module_random_seed):
    with seeded_server(pg_url, tmp_path_factory.mktemp("browser-security"),
                       dict(tickets=300, wards=2, municipalities=1), random_seed=module_random_seed) as served:
        yield served


def test_the_dashboard_works_under_its_content_security_policy(site, chromium_browser):
    result, server = site
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    messages: list[str] = []
    page = context.new_page()
    page.on("console", lambda message: messages.append(message.text))
    try:
        user = user_of(result, "manager")
        browser_sign_in(page, server.url, user["username"], user["password"])
        csp = page.evaluate("() => fetch('./').then(r => r.headers.get('content-security-policy'))")
        assert "frame-ancestors 'none'" in csp
        box = page.get_by_placeholder("tracking number, description or address")
        box.fill("zzz-no-such-ticket")
        box.press("Enter")
        page.locator(".opsdash-notice:visible").filter(has_text="No tickets").first.wait_for(timeout=30_000)
        page.get_by_role("button", name="Download CSV").wait_for(timeout=10_000)
    finally:
        context.close()
    violations = [m for m in messages if "Content Security Policy" in m or "EvalError" in m]
    assert not violations, violations
    assert any("rendered successfully" in m for m in messages), messages


def test_after_signing_out_the_old_tab_gets_no_more_data(site, chromium_browser):
    result, server = site
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        user = user_of(result, "admin")
        old_tab = context.new_page()
        browser_sign_in(old_tab, server.url, user["username"], user["password"])
        other_tab = context.new_page()
        other_tab.goto(f"{server.url}/logout", timeout=60_000)
        # The server closes the old tab's websocket (its session is revoked) and clears its page.
        old_tab.get_by_text(DISCONNECTED).first.wait_for(timeout=60_000)
        assert old_tab.locator(".tabulator-row").count() == 0
        old_tab.reload(timeout=60_000)
        assert "/login" in old_tab.url
        assert old_tab.locator(".opsdash-kpi-value").count() == 0
    finally:
        context.close()
