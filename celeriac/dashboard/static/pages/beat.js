// Beat: the periodic schedule, when each entry ran and runs next, who holds the lock.
import {facts, fmtAgo, fmtDuration, fmtTime, fmtValue, getJSON, h, section, table} from "../util.js";

/** A schedule as people write it ("every 30.00 s", "cron 0 4 * * 1"), else its repr. */
function describe(schedule) {
  if (!schedule || typeof schedule !== "object") return fmtValue(schedule);
  const type = String(schedule.type || "").toLowerCase();
  if (schedule.every !== undefined) return `every ${fmtDuration(schedule.every)}`;
  if (type.includes("cron") && schedule.minute !== undefined) {
    return `cron ${["minute", "hour", "day_of_month", "month_of_year", "day_of_week"]
      .map((f) => fmtValue(schedule[f] ?? "*")).join(" ")}`;
  }
  if (type === "solar") return `solar ${schedule.event} at ${schedule.lat}, ${schedule.lon}`;
  return schedule.human || fmtValue(schedule);
}

function when(value) {
  if (value === null || value === undefined || value === "") return "";
  if (typeof value === "number") return h("span", {title: fmtAgo(value)}, fmtTime(value));
  return String(value);
}

export async function render(main, _params, ctx) {
  const body = h("div");
  main.replaceChildren(h("h1", {}, "Beat schedule"), body);
  const load = async () => {
    const d = await getJSON("api/dashboard/beat");
    const leader = d.leader;
    body.replaceChildren(
      section("Scheduler", facts([
        ["Source", d.source || ""],
        ["Leader", leader ? h("span.mono", {}, leader.owner) : "no beat holds the lock"],
        ["Lock expires", leader ? when(leader.expires) : ""],
      ])),
      section(`Entries (${(d.entries || []).length})`, table([
        {label: "Name", cls: "nowrap", cell: (e) => h("strong", {}, e.name)},
        {label: "Task", cell: (e) => h("span.mono", {}, e.task)},
        {label: "Schedule", cell: (e) => h("span", {title: (e.schedule && e.schedule.human) || ""}, describe(e.schedule))},
        {label: "Args", cell: (e) => h("code.clip", {}, fmtValue(e.args))},
        {label: "Kwargs", cell: (e) => h("code.clip", {}, fmtValue(e.kwargs))},
        {label: "Enabled", cell: (e) => e.enabled === false ? h("span.badge.offline", {}, "off") : h("span.badge.online", {}, "on")},
        {label: "Last run", cls: "nowrap", cell: (e) => when(e.last_run_at) || h("span.muted", {}, "never")},
        {label: "Next run", cls: "nowrap", cell: (e) => [when(e.next_run_at), e.due ? [" ", h("span.badge.state-retry", {}, "due")] : null]},
        {label: "Runs", cls: "num", cell: (e) => e.total_run_count ?? ""},
      ], d.entries || [], {empty: "No periodic task configured (beat_schedule)."})));
  };
  await load();
  ctx.every(15, load);
}
