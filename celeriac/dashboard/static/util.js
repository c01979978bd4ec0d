// Small helpers shared by the pages: building DOM, calling the API, formatting values.

/** h("tag.class", {attr: value, onclick: fn}, child, ...): an element; null children skipped. */
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {user: null, can_act: false, read_only: true, csrf_token: "", url_prefix: ""};

async function answer(response) {
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    const why = body && body.error ? body.error : (typeof body === "string" && body) || response.statusText;
    throw new ApiError(response.status, `${response.status}: ${why}`);
  }
  return body;
}

/** GET a base-relative API path ("api/dashboard/tasks") with query parameters. */
export async function getJSON(path, params) {
  const query = params ? new URLSearchParams(clean(params)).toString() : "";
  const response = await fetch(path + (query ? `?${query}` : ""), {
    headers: {Accept: "application/json"}, credentials: "same-origin"});
  return answer(response);
}

/** POST fields as a JSON object (the API reads them as it reads Flower's form
 * arguments), with the CSRF header. */
export async function post(path, fields) {
  const body = fields && Object.keys(clean(fields)).length ? JSON.stringify(clean(fields)) : null;
  const headers = {"X-CSRF-Token": csrfToken(), Accept: "application/json"};
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method: "POST", credentials: "same-origin", headers, body});
  return answer(response);
}

function csrfToken() {
  const cookie = document.cookie.split("; ").find((c) => c.startsWith("celeriac_csrf="));
  return session.csrf_token || (cookie ? decodeURIComponent(cookie.split("=")[1]) : "");
}

function clean(params) {
  const out = {};
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") out[key] = value;
  }
  return out;
}

/** A message the user sees until dismissed (errors) or for a few seconds (success). */
export function notify(message, kind = "error") {
  const box = document.getElementById("notices");
  const note = h(`div.notice.${kind}`, {role: kind === "error" ? "alert" : "status"},
    h("span", {}, message),
    h("button.close", {type: "button", "aria-label": "Dismiss", onclick: () => note.remove()}, "×"));
  box.append(note);
  if (kind !== "error") setTimeout(() => note.remove(), 5000);
  return note;
}

/** Run an action from a button: confirm when destructive, report what came back. */
export async function act(button, label, run, {confirm: question} = {}) {
  if (question && !window.confirm(question)) return null;
  button.disabled = true;
  try {
    const result = await run();
    notify(`${label}: done`, "ok");
    return result;
  } catch (error) {
    notify(`${label} failed: ${error.message}`);
    return null;
  } finally {
    button.disabled = false;
  }
}

/** Why actions are off, or null when the user may act. */
export function whyNoActions() {
  if (session.can_act) return null;
  if (!session.user) return "Actions need a user: start the dashboard with --basic-auth or --token.";
  if (session.read_only) return "The dashboard is read-only (--read-only).";
  return "This user may not run actions.";
}

/** A button that runs an action, or a disabled one saying why when actions are off. */
export function actionButton(label, onclick, {danger = false, title} = {}) {
  const why = whyNoActions();
  return h(`button.btn${danger ? ".danger" : ""}`, {
    type: "button", disabled: Boolean(why), title: why || title,
    "data-action": label.toLowerCase(),
    onclick: why ? null : (event) => onclick(event.currentTarget),
  }, label);
}

export function pad(n) { return String(n).padStart(2, "0"); }

export function fmtTime(epoch) {
  if (epoch === null || epoch === undefined || epoch === "") return "";
  const d = new Date(Number(epoch) * 1000);
  if (Number.isNaN(d.getTime())) return String(epoch);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "";
  const s = Number(seconds);
  if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
  if (s < 60) return `${s.toFixed(2)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function fmtAgo(epoch) {
  if (!epoch) return "never";
  const s = Date.now() / 1000 - Number(epoch);
  if (s < 0) return `in ${fmtDuration(-s)}`;
  if (s < 2) return "just now";
  return `${fmtDuration(s)} ago`;
}

export function fmtValue(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

export function stateBadge(state) {
  const s = state || "PENDING";
  return h(`span.badge.state-${s.toLowerCase()}`, {}, s);
}

export function statusBadge(worker) {
  const online = worker.alive !== undefined ? worker.alive : worker.status === "ONLINE";
  return h(`span.badge.${online ? "online" : "offline"}`, {}, online ? "online" : "offline");
}

export function link(path, text) {
  return h("a", {href: path, "data-link": true}, text);
}

export function taskLink(uuid, text) {
  return uuid ? link(`task/${encodeURIComponent(uuid)}`, text || uuid) : "";
}

export function workerLink(name) {
  return name ? link(`worker/${encodeURIComponent(name)}`, name) : "";
}

/** A table with real headers; columns: [{label, cell(row), sort?: field, cls?}]. */
export function table(columns, rows, {caption, sort, onSort, empty = "Nothing yet.", rowKey} = {}) {
  const head = h("tr", {}, columns.map((col) => {
    if (!col.sort || !onSort) return h("th", {scope: "col", class: col.cls}, col.label);
    const active = sort && sort.replace(/^-/, "") === col.sort;
    const descending = active && sort.startsWith("-");
    const next = active && !descending ? `-${col.sort}` : col.sort;
    return h("th", {scope: "col", class: col.cls,
                    "aria-sort": active ? (descending ? "descending" : "ascending") : "none"},
      h("button.sort", {type: "button", onclick: () => onSort(next), "data-sort": col.sort},
        col.label, h("span.arrow", {"aria-hidden": "true"}, active ? (descending ? " ▼" : " ▲") : "")));
  }));
  const body = h("tbody", {}, rows.length ? rows.map((row) => tableRow(columns, row, rowKey))
    : h("tr.empty", {}, h("td", {colspan: columns.length}, empty)));
  return h("div.table-wrap", {}, h("table", {},
    caption ? h("caption", {}, caption) : null, h("thead", {}, head), body));
}

export function tableRow(columns, row, rowKey) {
  return h("tr", {dataset: rowKey ? {key: rowKey(row)} : {}},
    columns.map((col) => h("td", {class: col.cls, "data-label": col.label}, col.cell(row))));
}

/** A definition list of [label, value] pairs, values left out when empty. */
export function facts(pairs) {
  return h("dl.facts", {}, pairs.filter(([, v]) => v !== "" && v !== null && v !== undefined)
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function section(title, ...children) {
  return h("section.card", {}, h("h2", {}, title), ...children);
}


/** Show another page of the app (a base-relative path) without reloading. */
export function go(path) {
  window.dispatchEvent(new CustomEvent("celeriac:navigate", {detail: path}));
}

/** Replace an element's children with nodes, skipping empty ones (null, false). */
export function fill(el, nodes) {
  el.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}
