"""In Chromium (issue 17): the pages ask no host but the server's, and their weight comes compressed and cached.

Every request the browser makes is recorded (``page.on("request")``), on the
sign-in page, a councillor's dashboard on a phone, a manager's at desktop
size and the no-access page, with a reload of each (a returning visit); a
request to any other host fails the test, and so does a Content-Security-Policy
violation (a request the policy blocked never reaches the network).
"""
from __future__ import annotations

from urllib.parse import urlsplit

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest

from dashboard_app.compression import IMMUTABLE

from .helpers.browser import browser_sign_in, wait_for_dashboard
from .helpers.databases import user_of
from .helpers.servers import seeded_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PHONE = dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
             user_agent="Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Chrome/120.0 Mobile Safari/537.36")
DESKTOP = dict(viewport={"width": 1440, "height": 900})


@pytest.fixture(scope="module")
def site(pg_url, chromium, tmp_path_factory, module_random_seed):
    with seeded_server(pg_url, tmp_path_factory.mktemp("browser-light"), dict(tickets=300, wards=2, municipalities=1),
                       random_seed=module_random_seed) as served:
        yield served


class Traffic:
    """Every request and response of a browser context, and its console's CSP complaints."""

    def __init__(self, context) -> None:
        self.requests: list[str] = []
        self.responses: dict[str, dict[str, str]] = {}
        self.console: list[str] = []
        context.on("request", lambda request: self.requests.append(request.url))
        context.on("response", self._response)
        context.on("page", lambda page: page.on("console", lambda message: self.console.append(message.text)))

    def _response(self, response) -> None:
        self.responses[response.url] = response.headers  # lower-case names

    def other_hosts(self, server_url: str) -> list[str]:
        own = urlsplit(server_url).netloc
        # blob: and data: URLs are made in the page itself (blob:http://own-host/...): no request leaves it.
        return [url for url in self.requests
                if not url.startswith("data:") and urlsplit(url.removeprefix("blob:")).netloc != own]

    def csp_violations(self) -> list[str]:
        return [text for text in self.console if "Content Security Policy" in text]


def test_no_page_asks_any_host_but_the_server(site, chromium_browser):
    result, server = site
    visits = [("ward_councillor", PHONE, True), ("manager", DESKTOP, True), ("citizen", DESKTOP, False)]
    for role, device, dashboard in visits:
        context = chromium_browser.new_context(**device)
        traffic = Traffic(context)
        try:
            page = context.new_page()
            user = user_of(result, role)
            browser_sign_in(page, server.url, user["username"], user["password"], dashboard=dashboard)
            if not dashboard:
                page.get_by_text("No access").first.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle", timeout=30_000)
            page.reload(timeout=60_000)  # a returning visit, its HTTP cache filled
            if dashboard:
                wait_for_dashboard(page)
            page.wait_for_load_state("networkidle", timeout=30_000)
        finally:
            context.close()
        assert len(traffic.requests) > 10, (role, traffic.requests)
        assert traffic.other_hosts(server.url) == [], role
        assert traffic.csp_violations() == [], role


def test_scripts_come_compressed_versioned_files_cached_for_a_year_and_the_websocket_deflated(site, chromium_browser):
    result, server = site
    context = chromium_browser.new_context(**PHONE)
    traffic = Traffic(context)
    extensions: list[str] = []
    try:
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.webSocketHandshakeResponseReceived", lambda event: extensions.append(
            {k.lower(): v for k, v in event["response"]["headers"].items()}.get("sec-websocket-extensions", "")))
        user = user_of(result, "ward_councillor")
        browser_sign_in(page, server.url, user["username"], user["password"])
        # The page goes without bokeh-gl.min.js: no plot of it may ask for WebGL.
        backends = page.evaluate("""() => [...Bokeh.documents[0].all_models]
            .filter(m => m.output_backend !== undefined).map(m => m.output_backend)""")
    finally:
        context.close()
    assert backends and set(backends) == {"canvas"}, backends
    scripts = {url: headers for url, headers in traffic.responses.items()
               if urlsplit(url).path.endswith(".js") and "/static/" in url}
    named = [url for url in scripts if urlsplit(url).path.rsplit("/", 1)[-1] in
             ("panel.min.js", "bokeh.min.js", "bokeh-widgets.min.js", "bokeh-tables.min.js")]
    assert len(named) == 4, sorted(scripts)
    for url, headers in scripts.items():
        assert headers.get("content-encoding") in ("gzip", "br"), url
    versioned = [url for url in scripts if "v=" in urlsplit(url).query]
    assert len(versioned) >= 4
    for url in versioned:
        assert scripts[url]["cache-control"] == IMMUTABLE, url
    # Nothing the page does not use (measured in docs/performance.md): no WebGL bundle, no MathJax.
    assert not [url for url in scripts if "bokeh-gl" in url or "mathjax" in url]
    assert extensions and all("permessage-deflate" in value for value in extensions), extensions


def test_a_phone_builds_the_folded_live_feed_only_once_it_is_opened(site, chromium_browser):
    """Field-ready: hidden, the feed was drawn (and redrawn at each event) by the phone all the same (components.unfold)."""
    result, server = site
    context = chromium_browser.new_context(**PHONE)
    try:
        page = context.new_page()
        user = user_of(result, "ward_councillor")
        browser_sign_in(page, server.url, user["username"], user["password"])
        card = page.locator(".opsdash-live-card")
        feed = card.locator(".opsdash-feed-empty, .opsdash-feed-table")
        page.wait_for_timeout(1_000)  # time enough for anything already on its way
        assert feed.count() == 0
        card.get_by_role("button").first.tap()
        feed.first.wait_for(timeout=30_000)
        assert "Waiting for activity" in card.locator(".opsdash-feed-empty").inner_text()
    finally:
        context.close()


def test_a_phone_paints_the_pages_own_text_before_any_script_file_is_even_asked_for(site, chromium_browser):
    """Field-ready: ~900 KB of scripts arrived with the HTML and ran before the browser's first frame, so a phone (and
    Lighthouse) saw nothing until all had run (components.panel_compat.LATER_QUEUE_JS). Now the header and the who/where
    line paint first, the page's largest paint is that line, and every script and widget stylesheet is asked for after."""
    result, server = site
    context = chromium_browser.new_context(**PHONE)
    try:
        page = context.new_page()
        page.add_init_script("""
            window.__lcp = [];
            new PerformanceObserver(list => { for (const e of list.getEntries())
              window.__lcp.push([e.startTime, e.element ? e.element.className : '']); })
              .observe({type: 'largest-contentful-paint', buffered: true});""")
        user = user_of(result, "ward_councillor")
        browser_sign_in(page, server.url, user["username"], user["password"])
        timing = page.evaluate("""() => ({
            paint: performance.getEntriesByName('first-contentful-paint')[0].startTime,
            lcp: window.__lcp,
            later: performance.getEntriesByType('resource')
              // all but the template's own (its 2 KB menu script and its frame's stylesheets paint the page)
              .filter(r => (/[.]js([?]|$)/.test(r.name) && r.name.includes('/static/') || /panel[/]css[/]|tabulator.*[.]css/.test(r.name))
                           && !r.name.includes('template/'))
              .map(r => [r.name, r.startTime]),
        })""")
        kpis = page.locator(".opsdash-kpi-value").count()
    finally:
        context.close()
    names = [name for name, _ in timing["later"]]
    assert any("bokeh.min.js" in name for name in names) and any("fast-components" in name for name in names), names
    assert any("/panel/css/" in name for name in names), names  # the widgets' stylesheets wait too
    early = [(name, start) for name, start in timing["later"] if start < timing["paint"]]
    assert not early, (timing["paint"], early)
    assert timing["lcp"] and "opsdash-lead" in timing["lcp"][0][1], timing["lcp"]
    assert kpis > 0  # and the dashboard came all the same
