"""Reading and driving dashboard pages in a real browser (Playwright's sync API)."""
from __future__ import annotations

import time

from .servers import OUTPUT_DIR

#: Text of Panel panes: Bokeh renders each pane into a shadow root that innerText does not enter.
PANE_TEXT = """els => els.map(e => [...(e.shadowRoot || e).childNodes]
  .filter(n => !['STYLE', 'LINK', 'SCRIPT'].includes(n.nodeName)).map(n => n.textContent).join('').trim())"""


def pane_texts(page, css_class: str) -> list[str]:
    """Texts of the panes carrying ``css_class`` (e.g. ``opsdash-kpi-value``), in page order."""
    return page.locator(f".{css_class}").evaluate_all(PANE_TEXT)


def wait_for_pane_texts(page, css_class: str, expected: list[str], timeout_s: float = 30) -> None:
    """Until the panes carrying ``css_class`` show ``expected`` (a view updates after the page loads)."""
    deadline = time.monotonic() + timeout_s
    while (shown := pane_texts(page, css_class)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f".{css_class} shows {shown}, not {expected}")
        page.wait_for_timeout(100)


def wait_for_dashboard(page, timeout_ms: int = 60_000) -> None:
    """Until KPI values and the table's first page (or its empty notice) are on screen."""
    page.wait_for_selector(".opsdash-kpi-value", timeout=timeout_ms)
    # The table's "Loading tickets..." placeholder is a notice too, but not an end state.
    settled_notice = page.locator(".opsdash-notice:visible").filter(has_not_text="Loading tickets")
    page.locator(".tabulator-row").or_(settled_notice).first.wait_for(timeout=timeout_ms)


def browser_sign_in(page, base_url: str, username: str, password: str, *, dashboard: bool = True) -> None:
    """Sign in through the real /login form; with ``dashboard`` wait until it has rendered."""
    page.goto(f"{base_url}/login", timeout=60_000)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation(timeout=60_000):
        page.click("button[type=submit]")
    if dashboard:
        wait_for_dashboard(page)


def save_screenshot(page, name: str) -> None:
    """test-output/screenshots/NAME.png (the visible viewport, as a person would see it)."""
    folder = OUTPUT_DIR / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))
