"""The dashboard in headless Chromium against a real ``opsdash serve`` on PostgreSQL.

Screenshots of the main views go to test-output/screenshots/.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
from playwright.sync_api import expect

from components.kpis import matching_text
from dashboard_app.auth import GENERIC_ERROR
from data.db import get_engine
from data.filters import TicketFilters
from data.models import OPEN_STATUSES
from data.seed import SeedResult, seed
from data.tickets import count_tickets, page_rows, scoped_tickets

from .helpers.browser import browser_sign_in, pane_texts, save_screenshot, wait_for_dashboard, wait_for_pane_texts
from .helpers.databases import scope_of, user_of
from .helpers.dashboard import XSS_DESCRIPTION, add_ticket, other_ward
from .helpers.servers import OpsDashServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PHONE_UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Mobile Safari/537.36"
XSS_ADDRESS = '"><script>window.__xss=2</script>'


@dataclass
class Site:
    engine: object
    result: SeedResult
    server: OpsDashServer
    xss_tracking: str

    def login(self, role: str, **kwargs) -> tuple[str, str]:
        user = user_of(self.result, role, **kwargs)
        return user["username"], user["password"]


@pytest.fixture(scope="module")
def site(pg_url, chromium, tmp_path_factory, module_random_seed):
    engine = get_engine(pg_url)
    result = seed(engine, tickets=800, wards=3, municipalities=2, random_seed=module_random_seed)
    councillor = user_of(result, "ward_councillor")
    xss = add_ticket(engine, councillor["municipality_id"], councillor["ward_id"],
                     description=XSS_DESCRIPTION, address=XSS_ADDRESS)
    server = OpsDashServer(database_url=pg_url, log_dir=tmp_path_factory.mktemp("dashboard-server"))
    server.start()
    try:
        yield Site(engine, result, server, xss["tracking_number"])
    finally:
        server.stop()
    # Views fail soft (a notice, or a re-render instead of an update), so an error of
    # ours would pass unseen in the page: it must not be in the log either.
    ours = [line for line in server.log().splitlines() if re.search(r" (ERROR|CRITICAL) opsdash", line)]
    assert not ours, server.log()[-5000:]


def kpi(page) -> dict[str, str]:
    return dict(zip(pane_texts(page, "opsdash-kpi-title"), pane_texts(page, "opsdash-kpi-value")))


def column(page, field: str) -> list[str]:
    return page.locator(f".tabulator-row .tabulator-cell[tabulator-field={field}]").all_inner_texts()


def pick_option(page, title: str, option: str) -> None:
    """Pick ``option`` in the sidebar's multi-choice picker titled ``title``."""
    group = page.locator(".bk-input-group", has=page.locator("label", has_text=title))
    group.locator("input.choices__input--cloned").click()
    group.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")


def search(page, text: str, rows: int) -> None:
    box = page.get_by_placeholder("tracking number, description or address")
    box.fill(text)
    box.press("Enter")
    expect(page.locator(".tabulator-row")).to_have_count(rows, timeout=30_000)


def test_manager_sees_the_municipality_kpis_table_and_charts(site, browser_page, chromium_browser):
    page = browser_page
    errors: list[str] = []  # uncaught exceptions and our requests that failed (not the Fast design's web font)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda request: errors.append(request.url)
            if request.url.startswith(site.server.url) else None)
    browser_sign_in(page, site.server.url, *site.login("manager"))
    frame = scoped_tickets(site.engine, scope_of(site.engine, site.result, "manager"))
    assert kpi(page)["Open tickets"] == f"{frame.status.isin(OPEN_STATUSES).sum():,}"
    assert pane_texts(page, "opsdash-kpi-total") == [matching_text(len(frame))]
    shown = column(page, "tracking_number")
    assert len(shown) == 25 and set(shown) <= set(frame.tracking_number)
    assert site.result.municipalities[0]["name"] in pane_texts(page, "opsdash-who")[0]
    page.wait_for_selector(".bk-Canvas, canvas", timeout=30_000)  # the charts drew
    save_screenshot(page, "manager-desktop")
    # Without Bokeh's MathJax bundle (components.panel_compat, installed at server start), and nothing
    # missed it: the Markdown headings are there and the page logged no error.
    scripts = page.evaluate("[...document.scripts].map(s => s.src)")
    assert any("bokeh.min.js" in src for src in scripts) and not any("mathjax" in src for src in scripts)
    for heading in ("Filters", "Export", "Tickets", "Live activity"):
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    assert errors == []

    phone = chromium_browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, user_agent=PHONE_UA)
    try:
        mobile = phone.new_page()
        browser_sign_in(mobile, site.server.url, *site.login("manager"))
        assert kpi(mobile)["Open tickets"] == f"{frame.status.isin(OPEN_STATUSES).sum():,}"
        save_screenshot(mobile, "manager-phone")
        # Laid out at the phone's width (not a shrunken 980 px page), filters behind the menu button.
        assert mobile.evaluate("window.innerWidth") == 390
        assert mobile.locator(".opsdash-kpi").first.bounding_box()["x"] < 60  # not pushed right by a sidebar
    finally:
        phone.close()


def test_councillor_sees_only_their_ward_and_a_url_cannot_change_it(site, browser_page):
    page = browser_page
    username, password = site.login("ward_councillor")
    scope = scope_of(site.engine, site.result, "ward_councillor")
    own = scoped_tickets(site.engine, scope)
    browser_sign_in(page, site.server.url, username, password)
    assert set(column(page, "ward_id")) == {scope.ward_id}
    assert kpi(page)["Open tickets"] == f"{own.status.isin(OPEN_STATUSES).sum():,}"
    assert f"ward {scope.ward_id}" in pane_texts(page, "opsdash-who")[0]
    save_screenshot(page, "councillor-desktop")

    forged = other_ward(site.result, scope)
    page.goto(f"{site.server.url}/?ward={forged}&status=open")
    wait_for_dashboard(page)
    # The server rewrites the URL to what it applied: the status, not the ward.
    page.wait_for_url(lambda url: "status=open" in url and "ward=" not in url, timeout=30_000)
    assert set(column(page, "ward_id")) <= {scope.ward_id}
    assert pane_texts(page, "opsdash-kpi-total") == [matching_text((own.status == "open").sum())]


def test_filters_show_in_the_url_and_a_reload_keeps_them(site, browser_page):
    page = browser_page
    browser_sign_in(page, site.server.url, *site.login("manager"))
    frame = scoped_tickets(site.engine, scope_of(site.engine, site.result, "manager"))
    target = frame.tracking_number.iloc[3]
    search(page, target, rows=1)
    page.wait_for_url(lambda url: parse_qs(urlsplit(url).query).get("q") == [target], timeout=30_000)
    assert column(page, "tracking_number") == [target]
    page.reload()
    wait_for_dashboard(page)
    assert column(page, "tracking_number") == [target]
    assert page.get_by_placeholder("tracking number, description or address").input_value() == target
    assert pane_texts(page, "opsdash-kpi-total") == ["1 ticket matches the filters"]


# Models by their Bokeh type name (``__qualified__``): BokehJS 3.10's bundle has no class names.
def test_old_comma_links_and_the_links_the_page_writes_open_the_same_view(site, browser_page):
    page, url = browser_page, site.server.url
    browser_sign_in(page, url, *site.login("manager"))
    frame = scoped_tickets(site.engine, scope_of(site.engine, site.result, "manager"))
    ward = site.result.municipalities[0]["wards"][1]
    chosen = frame[frame.status.isin(["open", "in_progress"]) & (frame.ward_id == ward)]

    page.goto(f"{url}/?utm_source=mail&status=open,in_progress&ward={ward}")  # a link as OpsDash always wrote them
    wait_for_dashboard(page)
    wait_for_pane_texts(page, "opsdash-kpi-total", [matching_text(len(chosen))])
    target = chosen.tracking_number.iloc[0]
    search(page, target, rows=1)
    # What Panel's Location.sync writes: the old spelling, other keys kept.
    page.wait_for_url(lambda u: parse_qs(urlsplit(u).query) == {
        "utm_source": ["mail"], "status": ["open,in_progress"], "ward": [ward], "q": [target]}, timeout=30_000)
    page.goto(page.url)  # the written link, opened again
    wait_for_dashboard(page)
    assert column(page, "tracking_number") == [target]
    wait_for_pane_texts(page, "opsdash-kpi-total", [matching_text(1)])
    page.get_by_role("button", name="Clear filters").click()
    page.wait_for_url(lambda u: urlsplit(u).query == "utm_source=mail", timeout=30_000)
    wait_for_pane_texts(page, "opsdash-kpi-total", [matching_text(len(frame))])

    # Panel's own spelling of a list (JSON), and a value the state refuses: a note, the rest applies.
    page.goto(f"{url}/?status=%5B%22resolved%22%5D&from=2026-02-30")
    wait_for_dashboard(page)
    expect(page.get_by_text("The link's filters were partly not applied", exact=False)).to_be_visible(timeout=30_000)
    wait_for_pane_texts(page, "opsdash-kpi-total", [matching_text(int((frame.status == "resolved").sum()))])
    page.wait_for_url(lambda u: urlsplit(u).query == "status=resolved", timeout=30_000)


FIGURES = """() => [...Bokeh.documents[0].all_models].filter(m => m.constructor.__qualified__ === "Figure")
    .map(m => [m.id, m.title ? m.title.text : "", m.x_range.factors ? [...m.x_range.factors] : null])"""


#: Records in ``window.__updating`` every text the "Updating" note shows from now on.
WATCH_UPDATING = """() => { window.__updating = []; const doc = Bokeh.documents[0];
    doc.on_change(() => { for (const m of doc.all_models) {
        if ((m.css_classes || []).includes('opsdash-updating')) window.__updating.push(String(m.text)); } }); }"""


def test_a_filter_change_updates_the_charts_in_place(site, browser_page):
    """New figures go into the charts already drawn (their data and axes), not into new charts.

    Meanwhile the previous figures stay as they are, with one "Updating" note in the header
    (no spinner over every view), which goes once all views are done.
    """
    page = browser_page
    browser_sign_in(page, site.server.url, *site.login("manager"))
    page.wait_for_function(f"({FIGURES})().length === 3", timeout=30_000)
    before = {title: (model_id, factors) for model_id, title, factors in page.evaluate(FIGURES)}
    page.evaluate(WATCH_UPDATING)
    frame = scoped_tickets(site.engine, scope_of(site.engine, site.result, "manager"))
    ticket = frame[frame.ward_id.notna()].iloc[5]  # one that has a ward (else the bar says "(no ward)")
    search(page, ticket.tracking_number, rows=1)
    by_category = "Tickets by category and status"
    page.wait_for_function(f"({FIGURES})().some(f => f[1] === {by_category!r} && f[2].length === 1)",
                           timeout=30_000)
    after = {title: (model_id, factors) for model_id, title, factors in page.evaluate(FIGURES)}
    assert {t: i for t, (i, _) in after.items()} == {t: i for t, (i, _) in before.items()}  # the same models
    assert after[by_category][1] == [ticket.category] != before[by_category][1]
    assert after["Tickets per ward"][1] == [ticket.ward_id]
    expect(page.locator(".opsdash-updating")).to_have_text("")
    assert any("Updating" in t for t in page.evaluate("window.__updating"))
    assert page.locator(".pn-loading").count() == 0


def test_the_tables_rows_show_while_their_count_still_waits_and_the_pager_follows_it(site, browser_page):
    """Issue 20: a filter's first rows (a few index entries) do not wait for its count (the figures).

    The count is held back by a lock on the summary table the figures read; the rows, read from
    ``tickets``, arrive meanwhile with a pager that offers one page more; once the count is
    read, the pager counts every page and the "Updating" note goes.
    """
    page = browser_page
    browser_sign_in(page, site.server.url, *site.login("manager"))
    scope = scope_of(site.engine, site.result, "manager")
    # The two commonest statuses: pages to count, and filters no other test here asked for (the
    # server shares a count it has read, and would not read the locked table for it again).
    statuses = tuple(scoped_tickets(site.engine, scope).status.value_counts().index[:2])
    chosen = TicketFilters(statuses=statuses)
    first = list(page_rows(site.engine, scope, chosen, page=1, page_size=25)["tracking_number"])
    total = count_tickets(site.engine, scope, chosen)
    assert total > 50 and column(page, "tracking_number") != first
    pages = page.locator(".tabulator-paginator .tabulator-pages .tabulator-page")
    with site.engine.connect() as held:
        held.exec_driver_sql("LOCK TABLE ticket_summary_cells IN ACCESS EXCLUSIVE MODE")
        try:
            for status in statuses:
                pick_option(page, "Status", status.replace("_", " ").capitalize())
            tracking = page.locator(".tabulator-row .tabulator-cell[tabulator-field=tracking_number]")
            expect(tracking).to_have_text(first, timeout=30_000)
            expect(pages).to_have_text(["1", "2"])  # not counted yet: one page more than this one
            expect(page.locator(".opsdash-updating")).to_contain_text("Updating")
            assert pane_texts(page, "opsdash-kpi-total") != [matching_text(total)]
        finally:
            held.rollback()
    wait_for_pane_texts(page, "opsdash-kpi-total", [matching_text(total)])
    expect(pages).to_have_text(["1", "2", "3", "4", "5"][:-(-total // 25)])  # Tabulator shows up to 5
    expect(page.locator(".opsdash-updating")).to_have_text("")
    assert column(page, "tracking_number") == first


def test_markup_in_a_description_is_shown_as_text_and_never_runs(site, browser_page):
    page = browser_page
    browser_sign_in(page, site.server.url, *site.login("manager"))
    search(page, site.xss_tracking, rows=1)
    assert column(page, "description") == [XSS_DESCRIPTION]
    assert column(page, "address") == [XSS_ADDRESS]
    assert page.evaluate("window.__xss") is None
    assert page.locator(".tabulator-cell img, .tabulator-cell script").count() == 0
    save_screenshot(page, "xss-as-text")


@pytest.mark.parametrize("role", ["field_worker", "citizen"])
def test_roles_without_a_dashboard_get_a_no_access_page_and_no_data(site, browser_page, role):
    page = browser_page
    browser_sign_in(page, site.server.url, *site.login(role), dashboard=False)
    page.wait_for_selector(".opsdash-message", timeout=60_000)
    assert "no access" in " ".join(pane_texts(page, "opsdash-message")).lower()
    assert page.locator(".tabulator, .opsdash-kpi, .opsdash-filter-error").count() == 0
    if role == "field_worker":
        save_screenshot(page, "field-worker-no-access")


def test_wrong_password_is_refused_on_the_sign_in_page(site, browser_page):
    page = browser_page
    username, password = site.login("manager")
    browser_sign_in(page, site.server.url, username, password + "-wrong", dashboard=False)
    assert urlsplit(page.url).path == "/login"
    assert page.locator("#error-message").inner_text() == GENERIC_ERROR
    save_screenshot(page, "sign-in-refused")
    page.goto(f"{site.server.url}/")
    assert urlsplit(page.url).path == "/login"  # no dashboard without a session
