// Workers page (the app's home): an overview of the cluster and the workers table.
import {getJSON, h, section, statusBadge, table, workerLink, fmtAgo, stateBadge} from "../util.js";
import {timeChart} from "../charts.js";

const STATES = ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"];

const COLUMNS = [
  {label: "Worker", cell: (w) => workerLink(w.hostname)},
  {label: "Status", cell: (w) => statusBadge(w)},
  {label: "Pool", cell: (w) => w.pool ? h("span", {title: w.pool}, poolName(w.pool)) : ""},
  {label: "Concurrency", cls: "num", cell: (w) => w.concurrency ?? ""},
  {label: "Processed", cls: "num", cell: (w) => w.processed ?? ""},
  {label: "Load", cls: "num", cell: (w) => (w.loadavg || []).map((v) => Number(v).toFixed(2)).join(" ")},
  {label: "Active", cls: "num", cell: (w) => w.active_tasks ?? w.active ?? ""},
  {label: "Reserved", cls: "num", cell: (w) => w.reserved_tasks ?? ""},
  {label: "Queues", cell: (w) => (w.queues || []).map((q) => h("span.chip", {}, q.name || q))},
  {label: "Last heartbeat", cell: (w) => h("span", {title: w.last_heartbeat ? new Date(w.last_heartbeat * 1000).toISOString() : ""}, fmtAgo(w.last_heartbeat))},
];

export async function render(main, _params, ctx) {
  const cards = h("div.cards");
  const chart = h("div.chart-slot");
  const workersBox = h("div");
  main.replaceChildren(
    h("h1", {}, "Workers"),
    cards,
    section("Workers", workersBox),
    section("Tasks per 10 s, last hour", chart));

  const rows = new Map();
  const drawWorkers = () => {
    const list = [...rows.values()].sort((a, b) => (b.alive - a.alive) || a.hostname.localeCompare(b.hostname));
    workersBox.replaceChildren(table(COLUMNS, list, {empty: "No worker has been seen yet.",
                                                     rowKey: (w) => w.hostname}));
  };
  const loadWorkers = async () => {
    const answer = await getJSON("api/dashboard/workers");
    rows.clear();
    for (const w of answer.workers) rows.set(w.hostname, w);
    drawWorkers();
  };
  const loadOverview = async () => {
    const o = await getJSON("api/dashboard/overview");
    const byState = (o.counts && o.counts.by_state) || {};
    cards.replaceChildren(
      card("Workers online", o.workers_online ?? 0, `${o.workers_offline ?? 0} offline`),
      card("Tasks stored", (o.counts && o.counts.total) ?? 0, ""),
      ...STATES.filter((s) => byState[s]).map((s) => card(stateBadge(s), byState[s], "")),
      card("Events/s", o.ingest ? Number(o.ingest.events_per_second || 0).toFixed(1) : "–",
           o.ingest && o.ingest.lag_seconds !== undefined ? `lag ${Number(o.ingest.lag_seconds).toFixed(2)} s` : ""));
    chart.replaceChildren(throughputChart(o.throughput || [], "Tasks succeeded, failed and retried per 10 s, last hour"));
  };
  await Promise.all([loadWorkers(), loadOverview()]);
  ctx.listen("worker", (update) => {
    const w = update.worker || update;
    if (!w.hostname) return;
    // The live row lacks what inspect adds (pool, queues...): keep what we had.
    rows.set(w.hostname, {...(rows.get(w.hostname) || {}), ...w});
    drawWorkers();
  });
  ctx.every(10, loadOverview);
  ctx.every(30, loadWorkers);
}

/** "celeriac.worker.pools:PreforkPool" -> "prefork"; a short name stays as it is. */
export function poolName(pool) {
  const last = String(pool).split(/[.:]/).pop();
  return last.endsWith("Pool") && last.length > 4 ? last.slice(0, -4).toLowerCase() : last;
}

function card(title, value, note) {
  return h("div.stat", {}, h("div.stat-title", {}, title), h("div.stat-value", {}, String(value)),
    note ? h("div.stat-note", {}, note) : null);
}

/** The overview's and the plots page's throughput chart. */
export function throughputChart(all, label, opts = {}) {
  // A quiet start of the range is left out (three minutes kept), so a young history
  // is not a spike at the right edge.
  const firstBusy = all.findIndex((b) => b.succeeded || b.failed || b.retried || b.received);
  const keepFrom = all.length ? Math.min(all[all.length - 1].t - 180, firstBusy >= 0 ? all[firstBusy].t : Infinity) : 0;
  const buckets = all.filter((b) => b.t >= keepFrom);
  const pick = (field) => buckets.map((b) => [b.t, b[field] || 0]);
  return timeChart([
    {name: "succeeded", points: pick("succeeded"), color: "#2f6f4f"},
    {name: "failed", points: pick("failed"), color: "#b5443b"},
    {name: "retried", points: pick("retried"), color: "#c28a1e"},
  ], {label, area: true, ...opts});
}
