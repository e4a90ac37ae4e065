"""What moves, what paints largest and what blocks while a councillor's dashboard loads on a phone (issue 17).

Lighthouse 12.2.3's own "layout-shift-elements" and "largest-contentful-paint-element"
audits fail with Debian's Chromium ("frame_sequence"), so this asks the browser
itself: a ``PerformanceObserver`` for ``layout-shift`` (each shift's value and
the nodes that moved, with their rectangles before and after) and
``largest-contentful-paint`` (each candidate's element, size and time), at
Lighthouse's mobile size (412 x 823, DPR 1.75, a phone's user agent), in a
fresh page that signs a councillor in to ``opsdash serve --demo`` (or
``--url``) and loads the dashboard ``--runs`` times.

    python bench/bench_layout_shift.py [--runs 3] [--cpu 4] [--url URL --username U --password P]

``--cpu N`` slows the page's CPU N times (CDP), as Lighthouse's simulation assumes of a phone.
It also prints the main thread's long tasks (``longtask`` entries) and their blocking time (each
task's time past 50 ms, summed from the first contentful paint to the end of ``--settle``): what
Lighthouse's total blocking time estimates, measured here in the page instead of simulated. Both
vary with the demo's live events: run against a quiet server to compare builds (one build on a slow
host: Lighthouse 14.5-21.9 s over 6 runs; here 10.0-14.2 s without events, 10.6-26.1 s with them).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_page_weight import demo_server  # noqa: E402
from tests.helpers.browser import wait_for_dashboard  # noqa: E402
from tests.helpers.services import CHROMIUM_ARGS, chromium_path  # noqa: E402

#: Lighthouse 12's mobile emulation (its constants.js: moto g power 2022).
VIEWPORT = {"width": 412, "height": 823}
USER_AGENT = ("Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36")

OBSERVE = """
(() => {
  window.__shifts = []; window.__lcp = []; window.__long = [];
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) window.__long.push([Math.round(e.startTime), Math.round(e.duration)]);
  }).observe({type: 'longtask', buffered: true});
  const describe = node => {
    if (!node) return null;
    const parts = [];
    let n = node;
    for (let i = 0; n && i < 12; i++) {
      if (n.nodeType === 1) {
        const cls = (n.getAttribute('class') || '').split(/\\s+/).filter(c => c.startsWith('opsdash') || c.startsWith('bk-') || c.startsWith('tabulator')).slice(0, 3).join('.');
        parts.push(n.nodeName.toLowerCase() + (n.id ? '#' + n.id : '') + (cls ? '.' + cls : ''));
      } else if (n.nodeType === 3) { parts.push('#text'); }
      n = n.parentNode || n.host;
      if (n && n.nodeType === 11) { parts.push('||'); n = n.host; }
    }
    const text = (node.textContent || '').trim().slice(0, 60);
    return parts.join(' < ') + (text ? ` "${text}"` : '');
  };
  const rect = r => r ? [Math.round(r.x), Math.round(r.y), Math.round(r.width), Math.round(r.height)] : null;
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) {
      if (e.hadRecentInput) continue;
      window.__shifts.push({t: Math.round(e.startTime), value: e.value,
        sources: (e.sources || []).map(s => ({node: describe(s.node), before: rect(s.previousRect), after: rect(s.currentRect)}))});
    }
  }).observe({type: 'layout-shift', buffered: true});
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) {
      window.__lcp.push({t: Math.round(e.renderTime || e.loadTime || e.startTime), size: e.size,
                         element: describe(e.element), url: e.url || ''});
    }
  }).observe({type: 'largest-contentful-paint', buffered: true});
})();
"""


def one_load(browser, url: str, cookies: list[dict], cpu: float, settle_s: float) -> dict:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1.75, is_mobile=True, has_touch=True,
                                  user_agent=USER_AGENT)
    context.add_cookies(cookies)
    context.add_init_script(OBSERVE)
    page = context.new_page()
    if cpu > 1:
        page.context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": cpu})
    page.goto(url, timeout=120_000)
    wait_for_dashboard(page, timeout_ms=120_000)
    time.sleep(settle_s)
    result = page.evaluate("({shifts: window.__shifts, lcp: window.__lcp, long: window.__long, "
                           "fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime})")
    context.close()
    return result


def blocking(result: dict) -> int:
    """Each long task's time past 50 ms, from the first contentful paint on (Lighthouse's definition)."""
    start = result["fcp"] or 0
    return sum(max(0, min(duration, t + duration - start) - 50) for t, duration in result["long"] if t + duration > start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", type=float, default=1.0, help="CPU slow-down factor (CDP)")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds after the dashboard rendered")
    parser.add_argument("--url")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--json", type=Path, help="write every run's entries here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="opsdash-bench-shift-"))
    server = None
    try:
        if args.url:
            base, username, password = args.url.rstrip("/"), args.username, args.password
        else:
            server, username, password = demo_server(folder)
            base = server.url.rstrip("/")
        runs = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            context = browser.new_context(viewport=VIEWPORT, is_mobile=True, user_agent=USER_AGENT)
            page = context.new_page()
            page.goto(f"{base}/login", timeout=60_000)
            page.fill("input[name=username]", username)
            page.fill("input[name=password]", password)
            with page.expect_navigation(timeout=60_000):
                page.click("button[type=submit]")
            wait_for_dashboard(page, timeout_ms=120_000)
            url, cookies = page.url, context.cookies()
            context.close()
            for run in range(args.runs):
                result = one_load(browser, url, cookies, args.cpu, args.settle)
                runs.append(result)
                cls = sum(s["value"] for s in result["shifts"])
                print(f"run {run + 1}: CLS {cls:.3f}, FCP {result['fcp'] or 0:.0f} ms, "
                      f"LCP {result['lcp'][-1]['t'] if result['lcp'] else '-'} ms, blocking {blocking(result):,} ms "
                      f"in {len(result['long'])} long tasks (longest {max((d for _, d in result['long']), default=0):,} ms)")
                for shift in result["shifts"]:
                    print(f"  shift {shift['value']:.4f} at {shift['t']} ms")
                    for source in shift["sources"]:
                        print(f"      {source['before']} -> {source['after']}  {source['node']}")
                for entry in result["lcp"]:
                    print(f"  LCP candidate at {entry['t']} ms, {entry['size']} px2: {entry['element']} {entry['url']}")
            browser.close()
        if args.json:
            args.json.write_text(json.dumps(runs, indent=1))
        print(f"median CLS {median(sum(s['value'] for s in r['shifts']) for r in runs):.3f}, "
              f"median blocking {median(blocking(r) for r in runs):,.0f} ms (CPU {args.cpu:g}x)")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
