// One worker: what inspect says about it, and the remote-control actions.
import {act, actionButton, facts, fill, fmtAgo, fmtValue, getJSON, h, notify, post, section, statusBadge,
        table, taskLink, whyNoActions, fmtTime} from "../util.js";
import {poolName} from "./workers.js";

export async function render(main, [name], ctx) {
  const enc = encodeURIComponent(name);
  const body = h("div");
  main.replaceChildren(h("h1", {}, "Worker ", h("span.mono", {}, name)), body);

  const load = async () => {
    const d = await getJSON(`api/dashboard/worker/${enc}`);
    fill(body, view(d, name, enc, load));
  };
  await load();
  ctx.every(15, load);
}

function view(d, name, enc, reload) {
  const w = d.worker || {hostname: name};
  const stats = d.stats || {};
  const pool = stats.pool || {};
  const taskCols = [
    {label: "Task", cell: (t) => taskLink(t.id || t.uuid)},
    {label: "Name", cell: (t) => t.name || t.type || ""},
    {label: "Args", cell: (t) => h("code", {}, fmtValue(t.args))},
    {label: "Kwargs", cell: (t) => h("code", {}, fmtValue(t.kwargs))},
    {label: "Started", cell: (t) => fmtTime(t.time_start)},
  ];
  const scheduledCols = [
    {label: "Task", cell: (s) => taskLink((s.request || {}).id)},
    {label: "Name", cell: (s) => (s.request || {}).name || ""},
    {label: "ETA", cell: (s) => s.eta || ""},
    {label: "Priority", cls: "num", cell: (s) => s.priority ?? ""},
  ];
  const queueCols = [
    {label: "Queue", cell: (q) => q.name},
    {label: "Exchange", cell: (q) => (q.exchange && (q.exchange.name ?? q.exchange)) || ""},
    {label: "Routing key", cell: (q) => q.routing_key || ""},
    {label: "", cell: (q) => actionButton("Cancel consumer", (b) => act(b, `Stop consuming ${q.name}`,
      () => post(`api/worker/queue/cancel-consumer/${enc}`, {queue: q.name}).then(reload),
      {confirm: `Stop ${name} consuming from ${q.name}?`}), {danger: true})},
  ];
  const totals = Object.entries(stats.total || {}).map(([task, n]) => ({task, n}));
  return [
    section("Overview", facts([
      ["Status", statusBadge(w)],
      ["Last heartbeat", fmtAgo(w.last_heartbeat)],
      ["Pool", pool.implementation || w.pool ? h("span", {title: pool.implementation || w.pool},
        poolName(pool.implementation || w.pool)) : ""],
      ["Concurrency", pool["max-concurrency"] ?? w.concurrency ?? ""],
      ["Processes", (pool.processes || []).join(", ")],
      ["Processed", w.processed ?? ""],
      ["Load", (w.loadavg || []).map((v) => Number(v).toFixed(2)).join(" ")],
      ["PID", stats.pid ?? w.pid ?? ""],
      ["Software", [w.sw_ident, w.sw_ver, w.sw_sys].filter(Boolean).join(" ")],
      ["Prefetch count", stats.prefetch_count ?? ""],
      ["Uptime", stats.uptime !== undefined ? `${stats.uptime} s` : ""],
      ["First seen", fmtTime(w.first_seen)],
    ])),
    controls(name, enc, reload),
    section(`Active (${(d.active || []).length})`, table(taskCols, d.active || [], {empty: "Nothing running."})),
    section(`Reserved (${(d.reserved || []).length})`, table(taskCols, d.reserved || [], {empty: "Nothing reserved."})),
    section(`Scheduled (${(d.scheduled || []).length})`, table(scheduledCols, d.scheduled || [], {empty: "Nothing scheduled."})),
    section("Queues consumed", table(queueCols, d.active_queues || [], {empty: "No answer from the worker."})),
    section("Processed by task", table([
      {label: "Task", cell: (r) => r.task}, {label: "Processed", cls: "num", cell: (r) => r.n}], totals,
      {empty: "No totals reported."})),
    section(`Registered tasks (${(d.registered || []).length})`,
      h("ul.plain.columns", {}, (d.registered || []).map((t) => h("li.mono", {}, t)))),
  ];
}

function field(label, attrs) {
  const id = `f-${Math.random().toString(36).slice(2, 9)}`;
  const input = h("input", {id, ...attrs});
  return [h("label", {for: id}, label), input];
}

function controls(name, enc, reload) {
  const why = whyNoActions();
  const [nLabel, n] = field("Processes", {type: "number", min: 1, value: 1, name: "n"});
  const [minLabel, min] = field("Min", {type: "number", min: 0, value: 1, name: "min"});
  const [maxLabel, max] = field("Max", {type: "number", min: 1, value: 4, name: "max"});
  const [qLabel, queue] = field("Queue", {type: "text", name: "queue", placeholder: "queue name"});
  const [tLabel, taskName] = field("Task", {type: "text", name: "taskname", placeholder: "proj.tasks.add"});
  const [rLabel, rate] = field("Rate limit", {type: "text", name: "ratelimit", placeholder: "10/m"});
  const run = (label, path, fields, options) => (b) => act(b, label,
    () => post(path, typeof fields === "function" ? fields() : fields).then(reload), options);
  return section("Actions",
    why ? h("p.why", {}, why) : null,
    h("div.controls", {},
      h("div.control", {}, nLabel, n,
        actionButton("Grow", run("Pool grow", `api/worker/pool/grow/${enc}`, () => ({n: n.value}))),
        actionButton("Shrink", run("Pool shrink", `api/worker/pool/shrink/${enc}`, () => ({n: n.value})))),
      h("div.control", {}, minLabel, min, maxLabel, max,
        actionButton("Autoscale", run("Autoscale", `api/worker/pool/autoscale/${enc}`,
          () => ({min: min.value, max: max.value})))),
      h("div.control", {}, qLabel, queue,
        actionButton("Add consumer", run("Add consumer", `api/worker/queue/add-consumer/${enc}`,
          () => ({queue: queue.value})))),
      h("div.control", {}, tLabel, taskName, rLabel, rate,
        actionButton("Rate limit", (b) => {
          if (!taskName.value.trim()) { notify("Rate limit: name the task first."); taskName.focus(); return null; }
          return act(b, "Rate limit", () => post(`api/task/rate-limit/${encodeURIComponent(taskName.value.trim())}`,
                                                 {workername: name, ratelimit: rate.value}));
        })),
      h("div.control", {},
        actionButton("Shut down", run("Shutdown", `api/worker/shutdown/${enc}`, {},
          {confirm: `Shut down ${name}? It stops taking tasks and exits.`}), {danger: true}))));
}
