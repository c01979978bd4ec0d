// Queues: depth per queue and priority, delayed, unacked, consumers; dead letters; purge.
import {act, actionButton, fill, fmtTime, fmtValue, getJSON, h, post, section, table, taskLink,
        whyNoActions} from "../util.js";
import {timeChart} from "../charts.js";

const unknown = (v) => (v === null || v === undefined ? h("span.muted", {title: "This broker does not say"}, "–") : v);

export async function render(main, _params, ctx) {
  const body = h("div");
  main.replaceChildren(h("h1", {}, "Queues"), body);
  const load = async () => {
    const d = await getJSON("api/dashboard/queues");
    fill(body, view(d, load));
  };
  await load();
  ctx.every(10, load);
}

function view(d, reload) {
  const why = whyNoActions();
  const queues = d.queues || [];
  const columns = [
    {label: "Queue", cell: (q) => h("span.mono", {}, q.name)},
    {label: "Messages", cls: "num", cell: (q) => h("span", {"data-depth": q.name}, q.messages)},
    {label: "By priority", cell: (q) => q.by_priority
      ? Object.entries(q.by_priority).map(([p, n]) => h("span.chip", {title: `priority ${p}`}, `${p}: ${n}`))
      : unknown(null)},
    {label: "Delayed (ETA)", cls: "num", cell: (q) => unknown(q.delayed)},
    {label: "Unacked", cls: "num", cell: (q) => unknown(q.unacked)},
    {label: "Consumers", cls: "num", cell: (q) => unknown(q.consumers)},
    {label: "", cell: (q) => actionButton("Purge", (b) => act(b, `Purge ${q.name}`,
      () => post(`api/queues/purge/${encodeURIComponent(q.name)}`).then(reload),
      {confirm: `Delete every waiting message in ${q.name}? This cannot be undone.`}), {danger: true})},
  ];
  const deadColumns = [
    {label: "Time", cls: "nowrap", cell: (m) => fmtTime(m.time)},
    {label: "Queue", cls: "nowrap", cell: (m) => h("span.mono", {}, m.queue || "")},
    {label: "Reason", cell: (m) => m.reason || ""},
    {label: "Task", cell: (m) => m.task_id ? taskLink(m.task_id, h("span.mono.uuid", {title: m.task_id}, m.task_id)) : ""},
    {label: "Name", cell: (m) => m.task_name || ""},
    {label: "Args", cell: (m) => h("code.clip", {title: fmtValue(m.args)}, fmtValue(m.args))},
    {label: "Message", cell: (m) => h("code.clip", {title: m.payload_preview || ""}, m.payload_preview || "")},
    {label: "", cell: (m) => h("div.actions", {},
      actionButton("Requeue", (b) => act(b, "Requeue", () =>
        post(`api/queues/dead-letters/requeue/${encodeURIComponent(m.id)}`).then(reload))),
      actionButton("Delete", (b) => act(b, "Delete", () =>
        post(`api/queues/dead-letters/delete/${encodeURIComponent(m.id)}`).then(reload),
        {confirm: "Delete this dead letter for good?"}), {danger: true}))},
  ];
  const series = Object.entries(d.series || {}).map(([name, points]) => ({name, points}));
  return [
    why ? h("p.why", {}, why) : null,
    section("Depth", table(columns, queues, {empty: "No queue known: configure task_queues or start a worker.",
                                             rowKey: (q) => q.name})),
    section("Depth over the last hour", timeChart(series, {label: "Messages waiting per queue, last hour",
      emptyText: "No depth recorded yet."})),
    section(`Dead letters (${(d.dead_letters || []).length})`,
      table(deadColumns, d.dead_letters || [], {empty: "No dead letters.", rowKey: (m) => m.id})),
  ];
}
