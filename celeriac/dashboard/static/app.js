// The single-page app: session, history routing under the url prefix, the live feed.
import {getJSON, h, notify, session} from "./util.js";
import * as workers from "./pages/workers.js";
import * as worker from "./pages/worker.js";
import * as tasks from "./pages/tasks.js";
import * as task from "./pages/task.js";
import * as queues from "./pages/queues.js";
import * as beat from "./pages/beat.js";
import * as plots from "./pages/plots.js";

const ROUTES = [
  [/^$/, workers, "workers"],
  [/^tasks$/, tasks, "tasks"],
  [/^task\/([^/]+)$/, task, "tasks"],
  [/^worker\/([^/]+)$/, worker, "workers"],
  [/^queues$/, queues, "queues"],
  [/^beat$/, beat, "beat"],
  [/^plots$/, plots, "plots"],
];

/** The live feed: one EventSource for the app; pages listen while they are shown. */
export const live = {
  listeners: new Map(),
  on(kind, fn) {
    if (!this.listeners.has(kind)) this.listeners.set(kind, new Set());
    this.listeners.get(kind).add(fn);
    return () => this.listeners.get(kind).delete(fn);
  },
  emit(kind, data) {
    for (const fn of this.listeners.get(kind) || []) {
      try { fn(data); } catch (error) { console.error(error); }
    }
  },
};

// A browser opens at most six HTTP/1.1 connections to one server, and a stream holds
// one for as long as it is open: a hidden tab (or a page left for the back-forward
// cache) gives its stream back, and catches up by redrawing when it is shown again.
let source = null;

function connectLive() {
  if (source) return;
  const badge = document.getElementById("live");
  source = new EventSource("api/dashboard/stream");
  let lost = false;
  source.onopen = () => {
    badge.textContent = "live";
    badge.className = "live on";
    // What moved while the stream was down came in no event: redraw the page.
    if (lost) show();
    lost = false;
  };
  source.onerror = () => {
    lost = true;
    badge.textContent = "reconnecting…";
    badge.className = "live off";
  };
  for (const kind of ["task", "worker", "stats"]) {
    source.addEventListener(kind, (event) => {
      let data;
      try { data = JSON.parse(event.data); } catch { return; }
      live.emit(kind, data);
    });
  }
}

function disconnectLive() {
  if (!source) return;
  source.close();
  source = null;
  const badge = document.getElementById("live");
  badge.textContent = "paused";
  badge.className = "live off";
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) { disconnectLive(); return; }
  connectLive();
  show();
});
window.addEventListener("pagehide", disconnectLive);
window.addEventListener("pageshow", (event) => { if (event.persisted) { connectLive(); show(); } });

let cleanups = [];

// A page redrawn in the background that fails says so once, in one notice that stays
// until a redraw works again (a notice per failed poll would bury the page).
let staleNotice = null;

async function refresh(load) {
  try {
    await load();
    if (staleNotice) { staleNotice.remove(); staleNotice = null; }
  } catch (error) {
    const text = `Could not refresh this page: ${error.message}`;
    if (staleNotice && staleNotice.isConnected) staleNotice.querySelector("span").textContent = text;
    else staleNotice = notify(text);
  }
}

/** The route of a base-relative path ("task/abc"). */
function routePath() {
  const base = new URL(document.baseURI).pathname;
  const path = location.pathname.startsWith(base) ? location.pathname.slice(base.length) : "";
  return path.replace(/\/$/, "");
}

async function show() {
  for (const fn of cleanups) fn();
  cleanups = [];
  const path = routePath();
  const main = document.getElementById("main");
  const match = ROUTES.map(([re, page, nav]) => [re.exec(path), page, nav]).find(([m]) => m);
  document.querySelectorAll("nav a").forEach((a) => {
    a.toggleAttribute("aria-current", Boolean(match) && a.dataset.page === match[2]);
  });
  if (!match) {
    main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, `No page at /${path}.`));
    return;
  }
  const [m, page] = match;
  const params = m.slice(1).map(decodeURIComponent);
  main.replaceChildren(h("p.muted", {}, "Loading…"));
  const ctx = {
    live,
    onLeave: (fn) => cleanups.push(fn),
    listen: (kind, fn) => cleanups.push(live.on(kind, fn)),
    refresh,
    every: (seconds, load) => {
      const id = setInterval(() => refresh(load), seconds * 1000);
      cleanups.push(() => clearInterval(id));
    },
  };
  try {
    await page.render(main, params, ctx);
  } catch (error) {
    main.replaceChildren(h("h1", {}, "Could not load this page"),
      h("p.error-text", {role: "alert"}, error.message));
  }
}

/** Go to a base-relative path without reloading. */
export function navigate(path, {replace = false} = {}) {
  const url = new URL(path, document.baseURI);
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  show();
  document.getElementById("main").focus({preventScroll: true});
  window.scrollTo(0, 0);
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-link]");
  if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  const url = new URL(a.href);
  if (url.origin !== location.origin) return;
  event.preventDefault();
  history.pushState(null, "", url);
  show();
  window.scrollTo(0, 0);
});
window.addEventListener("popstate", show);
// Pages ask for a new route with an event, so they need not import the router.
window.addEventListener("celeriac:navigate", (event) => navigate(event.detail));

async function start() {
  try {
    Object.assign(session, await getJSON("api/dashboard/session"));
  } catch (error) {
    notify(`Could not read the session: ${error.message}`);
  }
  const who = document.getElementById("who");
  who.textContent = session.user ? `${session.user}${session.can_act ? "" : " (read-only)"}` : "read-only";
  who.title = session.can_act ? "You may run actions" : "Actions are off for this session";
  document.body.dataset.canAct = session.can_act ? "yes" : "no";
  connectLive();
  show();
}

start();
