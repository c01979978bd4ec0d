// Plots: throughput and failures over time, runtime distribution, queue depth.
import {getJSON, h, section} from "../util.js";
import {barChart, timeChart} from "../charts.js";
import {throughputChart} from "./workers.js";

const RANGES = [["15 minutes", 900], ["1 hour", 3600], ["6 hours", 21600], ["1 day", 86400], ["7 days", 604800]];

export async function render(main, _params, ctx) {
  const q = new URLSearchParams(location.search);
  const types = await getJSON("api/task/types").catch(() => ({"task-types": []}));
  const name = h("select", {id: "plot-name", name: "name"}, h("option", {value: ""}, "all tasks"),
    (types["task-types"] || []).map((t) => h("option", {value: t, selected: t === q.get("name")}, t)));
  const range = h("select", {id: "plot-range", name: "range"},
    RANGES.map(([label, s]) => h("option", {value: s, selected: String(s) === (q.get("range") || "3600")}, label)));
  const charts = h("div");
  main.replaceChildren(h("h1", {}, "Plots"),
    h("form.filters", {"aria-label": "Plot options", onsubmit: (e) => e.preventDefault()},
      h("div.field", {}, h("label", {for: "plot-name"}, "Task"), name),
      h("div.field", {}, h("label", {for: "plot-range"}, "Range"), range)),
    charts);

  const load = async () => {
    const since = Date.now() / 1000 - Number(range.value);
    const url = new URL(location.href);
    url.search = new URLSearchParams({...(name.value ? {name: name.value} : {}), range: range.value}).toString();
    history.replaceState(null, "", url);
    const d = await getJSON("api/dashboard/plots", {name: name.value, since});
    const r = d.runtimes || {buckets: [], counts: []};
    const labels = (r.buckets || []).map((b) => (b === null || !isFinite(b) ? "more" : `≤${fmtBound(b)}`));
    const counts = [...(r.counts || [])];
    if (r.over) { labels.push(`>${fmtBound(r.buckets[r.buckets.length - 1])}`); counts.push(r.over); }
    const quantiles = r.n ? `n = ${r.n} · p50 ${fmtBound(r.p50)} · p90 ${fmtBound(r.p90)} · p99 ${fmtBound(r.p99)}` : "";
    const depth = Object.entries(d.queue_depth || {}).map(([queue, points]) => ({name: queue, points}));
    charts.replaceChildren(
      section("Throughput and failures", throughputChart(d.throughput || [],
        "Tasks succeeded, failed and retried per bucket", {height: 240})),
      section(`Runtime distribution${name.value ? ` of ${name.value}` : ""}`,
        quantiles ? h("p.muted", {}, quantiles) : null,
        barChart(labels, counts, {label: "Tasks per runtime bucket", emptyText: "No finished task in this range."})),
      section("Queue depth", timeChart(depth, {label: "Messages waiting per queue", emptyText: "No depth recorded yet."})));
  };
  name.addEventListener("change", () => load().catch(showError));
  range.addEventListener("change", () => load().catch(showError));
  const showError = (error) => charts.replaceChildren(h("p.error-text", {role: "alert"}, error.message));
  await load();
  // Finished tasks move the charts: redraw a moment after the last of a burst.
  let pending = null;
  ctx.listen("task", () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; ctx.refresh(load); }, 1000);
  });
  ctx.onLeave(() => clearTimeout(pending));
  ctx.every(30, load);
}

function fmtBound(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Number(seconds);
  if (s < 0.001) return `${+(s * 1e6).toPrecision(3)} µs`;
  if (s < 1) return `${+(s * 1000).toPrecision(3)} ms`;
  return `${+s.toPrecision(3)} s`;
}
