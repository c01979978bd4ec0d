// One task: what it was called with, what came of it, its events, its family, actions.
import {act, actionButton, facts, fill, fmtDuration, fmtTime, fmtValue, getJSON, go, h, notify, post,
        section, stateBadge, table, taskLink, whyNoActions, workerLink} from "../util.js";

const FINISHED = new Set(["SUCCESS", "FAILURE", "REVOKED", "REJECTED"]);

export async function render(main, [uuid], ctx) {
  const enc = encodeURIComponent(uuid);
  const load = async () => {
    let t;
    try {
      t = await getJSON(`api/dashboard/task/${enc}`);
    } catch (error) {
      if (error.status !== 404) throw error;
      main.replaceChildren(h("h1", {}, "Task ", h("span.mono", {}, uuid)),
        h("p.error-text", {role: "alert"}, "No such task in the history store (yet). " +
          "It appears here once an event about it arrives."));
      return;
    }
    fill(main, view(t, enc, load));
  };
  await load();
  let pending = null;
  ctx.listen("task", (update) => {
    const t = update.task || update;
    if (t.uuid !== uuid && t.parent_id !== uuid) return;
    // Several events of one task often come together: redraw once for them.
    clearTimeout(pending);
    pending = setTimeout(() => ctx.refresh(load), 150);
  });
  ctx.onLeave(() => clearTimeout(pending));
}

function view(t, enc, reload) {
  const why = whyNoActions();
  const finished = FINISHED.has(t.state);
  const retry = actionButton("Retry", (b) => act(b, "Retry", async () => {
    const answer = await post(`api/task/retry/${enc}`);
    const id = answer["task-id"];
    notify(h("span", {}, "Sent again as ", taskLink(id)), "ok");
    go(`task/${encodeURIComponent(id)}`);
    return answer;
  }), {title: "Send the task again with the same arguments"});
  const revoke = actionButton("Revoke", (b) => act(b, "Revoke", () => post(`api/task/revoke/${enc}`).then(reload),
    {confirm: "Revoke this task? Workers will not run it."}), {danger: true});
  const terminate = actionButton("Terminate", (b) => act(b, "Terminate",
    () => post(`api/task/terminate/${enc}`).then(reload),
    {confirm: "Terminate this task? The process running it is sent SIGTERM."}), {danger: true});
  if (finished) { revoke.disabled = true; terminate.disabled = true; revoke.title = terminate.title = "The task has finished."; }

  const outcome = t.state === "FAILURE" || t.exception
    ? section("Exception", h("pre.code", {id: "task-exception"}, fmtValue(t.exception)),
        t.traceback ? h("details", {open: true}, h("summary", {}, "Traceback"),
                        h("pre.code.traceback", {}, t.traceback)) : null)
    : section("Result", h("pre.code", {id: "task-result"}, fmtValue(t.result)));
  return [
    h("div.title-row", {},
      h("h1", {}, h("span.mono", {}, t.name || "task"), " ", stateBadge(t.state)),
      h("div.actions", {}, retry, revoke, terminate)),
    why ? h("p.why", {}, why) : null,
    h("div.grid2", {},
      section("Task", facts([
        ["UUID", h("span.mono", {id: "task-uuid"}, t.uuid)],
        ["State", stateBadge(t.state)],
        ["Worker", workerLink(t.worker)],
        ["Received", fmtTime(t.received)], ["Started", fmtTime(t.started)],
        ["Succeeded", fmtTime(t.succeeded)], ["Failed", fmtTime(t.failed)],
        ["Revoked", fmtTime(t.revoked)],
        ["Runtime", fmtDuration(t.runtime)], ["Retries", t.retries ?? ""],
        ["ETA", t.eta || ""], ["Expires", t.expires || ""],
        ["Exchange", t.exchange || ""], ["Routing key", t.routing_key || ""],
      ])),
      section("Arguments",
        h("h3", {}, "args"), h("pre.code", {id: "task-args"}, fmtValue(t.args)),
        h("h3", {}, "kwargs"), h("pre.code", {id: "task-kwargs"}, fmtValue(t.kwargs)))),
    outcome,
    family(t),
    section("Timeline", timeline(t.events || [])),
  ];
}

function family(t) {
  const children = t.children || [];
  const canvas = t.canvas || null;
  const parent = t.parent && typeof t.parent === "object" ? t.parent.uuid : t.parent || t.parent_id;
  const root = t.root && typeof t.root === "object" ? t.root.uuid : t.root || t.root_id;
  const pairs = [
    ["Parent", parent ? taskLink(parent) : ""],
    ["Root", root && root !== t.uuid ? taskLink(root) : ""],
    ["Group", canvas && canvas.group_id ? h("span.mono", {}, canvas.group_id) : t.group_id || ""],
  ];
  if (!pairs.some(([, v]) => v) && !children.length && !(canvas && canvas.members)) return null;
  return section("Family",
    facts(pairs),
    children.length ? [h("h3", {}, `Children (${children.length})`),
      h("ul.plain", {}, children.map((c) => h("li", {}, taskLink(typeof c === "object" ? c.uuid : c))))] : null,
    canvas && canvas.members && canvas.members.length ? [h("h3", {}, `Group members (${canvas.members.length})`),
      h("ul.plain", {}, canvas.members.map((m) => h("li", {}, taskLink(m, m === t.uuid ? `${m} (this task)` : m))))] : null,
    canvas && canvas.chord_body ? [h("h3", {}, "Chord body"), h("p", {},
      typeof canvas.chord_body === "string" ? taskLink(canvas.chord_body) : h("code", {}, fmtValue(canvas.chord_body)))] : null);
}

// What each event adds, without the bookkeeping every event carries.
const ROUTINE = new Set(["clock", "pid", "local_received", "utcoffset", "timestamp", "hostname",
                         "uuid", "type", "root_id", "parent_id"]);

function eventFields(fields) {
  if (!fields || typeof fields !== "object") return fmtValue(fields);
  return Object.entries(fields).filter(([k, v]) => !ROUTINE.has(k) && v !== null && v !== "")
    .map(([k, v]) => `${k}=${fmtValue(v)}`).join("  ");
}

function timeline(events) {
  return table([
    {label: "Event", cell: (e) => h("span.mono", {}, e.type)},
    {label: "Time", cls: "nowrap", cell: (e) => fmtTime(e.timestamp)},
    // A task-sent event comes from the client that sent it, not from a worker.
    {label: "Host", cell: (e) => (e.type === "task-sent" ? e.hostname || "" : workerLink(e.hostname))},
    {label: "Fields", cell: (e) => h("code.clip.wide", {title: eventFields(e.fields)}, eventFields(e.fields))},
  ], events, {empty: "No events stored."});
}
