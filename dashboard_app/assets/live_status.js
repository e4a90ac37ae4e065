// OpsDash live state (issue 17): the header says "Live" only while the server's heartbeats
// arrive; a lost connection is retried with backoff and, once the server answers, the page
// reloads itself: the URL keeps its filters and the new session shows current figures and feed.
// Served by OpsDash itself (dashboard_app/live.py, LiveScriptHandler); no third party.
(() => {
  "use strict";
  const HEARTBEAT_MS = @HEARTBEAT_MS@;     // dashboard_app/live.py HEARTBEAT_S
  const STALE_MS = 3 * HEARTBEAT_MS;       // three beats missed: the connection is as good as gone
  const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
  const OFFLINE_AFTER = 4;                 // failed tries before the header says Offline
  const PROBE_TIMEOUT_MS = 5000;
  // A page that fails again right after a recovery reload keeps backing off across reloads,
  // so a server that accepts pages but not websockets never gets a reload loop.
  const RECOVERY_KEY = "opsdash-recovery";
  const TEXT = {reconnecting: "\u25cc Reconnecting\u2026", offline: "\u25cb Offline"};

  let lastBeat = Date.now();
  let state = "live";
  let failures = 0;
  let timer = null;

  const recent = (() => {
    try {
      const saved = JSON.parse(sessionStorage.getItem(RECOVERY_KEY) || "null");
      return saved && Date.now() - saved.at < 60000 ? saved.count : 0;
    } catch (_) { return 0; }
  })();

  // Bokeh renders each layout into its own shadow root: the feed's line is some levels down.
  function deep_query(selector, root) {
    const found = [...root.querySelectorAll(selector)];
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) found.push(...deep_query(selector, el.shadowRoot));
    }
    return found;
  }

  // The header's indicator and the live feed's status line: both show the server's word while
  // it is heard, ours (Reconnecting / Offline) while it is not.
  function status_elements() {
    const found = [];
    for (const host of deep_query(".opsdash-live-indicator, .opsdash-live-status", document)) {
      const root = host.shadowRoot || host;
      const el = root.querySelector(".opsdash-live") || root.querySelector("pre");
      if (el !== null) found.push(el);
    }
    return found;
  }

  function show(next) {
    state = next;
    document.documentElement.dataset.opsdashConnection = next;
    for (const el of status_elements()) {
      if (next !== "live" && el.dataset.server === undefined) el.dataset.server = el.textContent;
      const text = next === "live" ? el.dataset.server : TEXT[next];
      if (text !== undefined && el.textContent !== text) el.textContent = text;
      // Our copy of the feed's line is stale once restored (the server's span carries its own).
      if (next === "live" && !el.classList.contains("opsdash-live")) delete el.dataset.server;
    }
  }

  function schedule() {
    clearTimeout(timer);
    const step = Math.min(failures + recent, BACKOFF_MS.length - 1);
    const delay = BACKOFF_MS[step] * (0.8 + 0.4 * Math.random());  // jitter: not every phone at once
    timer = setTimeout(probe, delay);
  }

  function failed() {
    failures += 1;
    show(failures >= OFFLINE_AFTER || navigator.onLine === false ? "offline" : "reconnecting");
    schedule();
  }

  function probe() {
    timer = null;
    if (navigator.onLine === false) { failed(); return; }
    const controller = new AbortController();
    const abort = setTimeout(() => controller.abort(), PROBE_TIMEOUT_MS);
    fetch(new URL("health", document.baseURI), {cache: "no-store", credentials: "same-origin",
                                               signal: controller.signal})
      .then((response) => { clearTimeout(abort); if (response.ok) recover(); else failed(); })
      .catch(() => { clearTimeout(abort); failed(); });
  }

  function recover() {
    try {
      sessionStorage.setItem(RECOVERY_KEY, JSON.stringify({at: Date.now(), count: recent + 1}));
    } catch (_) { /* private mode: no memory across reloads, backoff restarts */ }
    // A fresh session: the link's filters, current figures and feed. A sign-in that ended
    // meanwhile gets the sign-in page, which carries no script of ours: no loop.
    window.location.reload();
  }

  function lost() {
    if (state !== "live") return;  // already retrying
    failures = 0;
    show(navigator.onLine === false ? "offline" : "reconnecting");
    schedule();
  }

  function beat() {
    lastBeat = Date.now();
    if (state !== "live") {  // beats again without a reload (the socket had only stalled)
      clearTimeout(timer);
      timer = null;
      show("live");
    }
  }

  // Every BokehJS document of the page, not only the first: Panel makes documents of its own
  // too, and which one is the session's depends on load order.
  const attached = new WeakSet();
  function attach_documents() {
    const docs = (window.Bokeh && window.Bokeh.documents) || [];
    for (const doc of docs) {
      if (attached.has(doc)) continue;
      attached.add(doc);
      doc.on_change(beat);                     // any message from the server, the heartbeat included
      doc.on_event("connection_lost", lost);   // BokehJS: the websocket closed
    }
    return docs.length > 0;
  }

  function start() {
    window.addEventListener("offline", lost);
    window.addEventListener("online", () => { if (state !== "live") { clearTimeout(timer); probe(); } });
    setInterval(() => {
      if (state === "live" && Date.now() - lastBeat > STALE_MS) lost();
      // BokehJS re-renders a pane from its model (a resize, the toast appearing): say it again.
      else if (state !== "live") show(state);
    }, 1000);
    // A hidden or frozen tab (a phone's screen off) misses no beat it could have had: the socket,
    // if it is still open, gets a fresh window before the page takes itself for cut off.
    document.addEventListener("visibilitychange", () => { if (!document.hidden) lastBeat = Date.now(); });
    // A page that stays up a minute has recovered: the next loss starts the backoff afresh.
    setTimeout(() => { try { sessionStorage.removeItem(RECOVERY_KEY); } catch (_) {} }, 60000);
    lastBeat = Date.now();
    show("live");
  }

  const wait = setInterval(() => {
    if (attach_documents()) {
      clearInterval(wait);
      start();
      setInterval(attach_documents, 1000);
    }
  }, 200);
})();
