// Tasks: the live, filtered, sortable, paginated list.
import {fmtDuration, fmtTime, fmtValue, getJSON, h, stateBadge, table, tableRow, taskLink,
        workerLink} from "../util.js";

const STATES = ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED"];
const PAGE = 50;
const DEFAULT_SORT = "-timestamp";

const COLUMNS = [
  {label: "Name", sort: "name", cell: (t) => h("span.mono", {}, t.name || "")},
  {label: "UUID", sort: "uuid", cell: (t) => taskLink(t.uuid, h("span.mono.uuid", {}, t.uuid))},
  {label: "State", sort: "state", cell: (t) => stateBadge(t.state)},
  {label: "Args", cell: (t) => h("code.clip", {title: fmtValue(t.args)}, fmtValue(t.args))},
  {label: "Kwargs", cell: (t) => h("code.clip", {title: fmtValue(t.kwargs)}, fmtValue(t.kwargs))},
  {label: "Result", cell: (t) => h("code.clip", {title: fmtValue(t.result ?? t.exception)},
                                   fmtValue(t.state === "FAILURE" ? t.exception : t.result))},
  {label: "Received", sort: "received", cls: "nowrap", cell: (t) => fmtTime(t.received)},
  {label: "Runtime", sort: "runtime", cls: "num", cell: (t) => fmtDuration(t.runtime)},
  {label: "Worker", sort: "worker", cell: (t) => workerLink(t.worker)},
];

function toEpoch(local) { return local ? String(new Date(local).getTime() / 1000) : ""; }
function toLocal(epoch) {
  if (!epoch) return "";
  const d = new Date(Number(epoch) * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function labelled(label, control) {
  control.id = `filter-${control.name}`;
  return h("div.field", {}, h("label", {for: control.id}, label), control);
}

export async function render(main, _params, ctx) {
  const q = new URLSearchParams(location.search);
  const filters = {
    state: q.get("state") || "", name: q.get("name") || "", worker: q.get("worker") || "",
    since: q.get("since") || "", until: q.get("until") || "", search: q.get("search") || "",
    sort_by: q.get("sort_by") || DEFAULT_SORT, offset: Number(q.get("offset") || 0),
  };
  let shown = [];
  let total = 0;

  const [types, workers] = await Promise.all([
    getJSON("api/task/types").catch(() => ({"task-types": []})),
    getJSON("api/dashboard/workers").catch(() => ({workers: []})),
  ]);
  const select = (name, options, value) => h("select", {name},
    h("option", {value: ""}, "any"),
    options.map((o) => h("option", {value: o, selected: o === value}, o)));
  const form = h("form.filters", {role: "search", "aria-label": "Filter tasks"},
    labelled("State", select("state", STATES, filters.state)),
    labelled("Name", select("name", types["task-types"] || [], filters.name)),
    labelled("Worker", select("worker", (workers.workers || []).map((w) => w.hostname), filters.worker)),
    labelled("From", h("input", {type: "datetime-local", name: "since", value: toLocal(filters.since)})),
    labelled("To", h("input", {type: "datetime-local", name: "until", value: toLocal(filters.until)})),
    labelled("Search id or args", h("input", {type: "search", name: "search", value: filters.search,
                                              placeholder: "id prefix, args text"})),
    h("div.field.buttons", {}, h("button.btn", {type: "submit"}, "Apply"),
      h("button.btn.quiet", {type: "reset"}, "Clear")));
  const summary = h("p.summary", {"aria-live": "polite"});
  const listBox = h("div");
  const pager = h("nav.pager", {"aria-label": "Pages of tasks"});
  main.replaceChildren(h("h1", {}, "Tasks"), form, summary, listBox, pager);

  const readForm = () => {
    const data = new FormData(form);
    Object.assign(filters, {
      state: data.get("state"), name: data.get("name"), worker: data.get("worker"),
      since: toEpoch(data.get("since")), until: toEpoch(data.get("until")),
      search: data.get("search").trim(), offset: 0,
    });
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); readForm(); load(); });
  form.addEventListener("reset", () => setTimeout(() => { readForm(); load(); }));
  form.addEventListener("change", (event) => { if (event.target.tagName === "SELECT") { readForm(); load(); } });

  const draw = () => {
    listBox.replaceChildren(table(COLUMNS, shown, {
      sort: filters.sort_by, empty: "No task matches.", rowKey: (t) => t.uuid,
      onSort: (sort) => { filters.sort_by = sort; filters.offset = 0; load(); },
    }));
    const first = total ? filters.offset + 1 : 0;
    summary.textContent = `${first}–${filters.offset + shown.length} of ${total} tasks`;
    pager.replaceChildren(
      h("button.btn.quiet", {type: "button", disabled: filters.offset === 0,
        onclick: () => { filters.offset = Math.max(0, filters.offset - PAGE); load(); }}, "← Newer"),
      h("button.btn.quiet", {type: "button", disabled: filters.offset + PAGE >= total,
        onclick: () => { filters.offset += PAGE; load(); }}, "Older →"));
  };
  const load = async () => {
    const params = {limit: PAGE, ...filters};
    if (params.sort_by === DEFAULT_SORT) delete params.sort_by;
    if (!params.offset) delete params.offset;
    const url = new URL(location.href);
    url.search = new URLSearchParams(Object.entries(params).filter(([k, v]) => v && k !== "limit")).toString();
    history.replaceState(null, "", url);
    try {
      const answer = await getJSON("api/dashboard/tasks", params);
      shown = answer.tasks;
      total = answer.total;
      draw();
    } catch (error) {
      listBox.replaceChildren(h("p.error-text", {role: "alert"}, error.message));
    }
  };
  await load();

  // A task that moved: its row is redrawn in place; a new one matching the filters
  // comes in at the top of the first page, when the list is newest first.
  ctx.listen("task", (update) => {
    const t = update.task || update;
    if (!t.uuid) return;
    const index = shown.findIndex((row) => row.uuid === t.uuid);
    const merged = index >= 0 ? {...shown[index], ...t} : t;
    const newestFirst = filters.sort_by === DEFAULT_SORT && filters.offset === 0 && !filters.until;
    const tbody = listBox.querySelector("tbody");
    const fits = matches(merged, filters);
    if (index >= 0 && !(newestFirst && fits)) {
      shown[index] = merged;
      const old = tbody.querySelector(`tr[data-key="${CSS.escape(t.uuid)}"]`);
      if (old) old.replaceWith(tableRow(COLUMNS, merged, (r) => r.uuid));
      return;
    }
    if (!newestFirst || !fits) return;
    if (index >= 0) shown.splice(index, 1); else total += 1;
    shown.unshift(merged);
    shown = shown.slice(0, PAGE);
    draw();
  });
}

function matches(t, f) {
  if (f.state && t.state !== f.state) return false;
  if (f.name && t.name !== f.name) return false;
  if (f.worker && t.worker !== f.worker) return false;
  if (f.search) {
    const text = [t.args, t.kwargs, t.result].map(fmtValue).join(" ");
    if (!t.uuid.startsWith(f.search) && !text.includes(f.search)) return false;
  }
  return true;
}
