// The queue and the tasks (GET /v1/tasks), and one task: its fields, attempts, events and,
// for operators, its receipt (GET /v1/tasks/{id}/decision).

import { followEvents, getJson, segment } from "./api.js";
import { age, el, fields, money, problem, show, table } from "./dom.js";
import { attemptsTable, receipt } from "./receipt.js";

const STATES = ["", "queued", "planned", "launching", "running", "succeeded", "failed", "cancelled"];
export const REFRESH_MS = 5000;
// with the event stream open, the list is redrawn on events, and by the timer only every 6th tick (30 s)
const STREAMING_REFRESH_EVERY = 6;
const STREAM_REDRAW_MS = 250;

/** Why a task is where it is: a waiting task's queue reason and for how long, else its own reason. */
export function why(task) {
  if (task.queue_reason) return `waiting ${age(task.queued_since)}: ${task.queue_reason}`;
  return task.reason || "";
}

/** The task's estimated cloud cost so far; "+" when some attempt had no price in its receipt (the figure is low). */
function cost(task) {
  if (!task.cost) return "";
  return money(task.cost.estimated_usd) + (task.cost.unpriced_attempts ? "+" : "");
}

function taskRow(task) {
  return {
    props: { class: "task", "data-task-id": task.id },
    cells: [
      { cell: el("a", { href: `#/tasks/${segment(task.id)}` }, task.id), class: "id" },
      task.tenant,
      { cell: task.state, class: `state-${task.state}` },
      task.target || "",
      task.priority,
      { cell: cost(task), class: "number cost" },
      { cell: money(task.budget_usd), class: "number" },
      { cell: age(task.created_at), class: "number" },
      { cell: why(task), class: "why" },
    ],
  };
}

function filters(who, current, reload) {
  const state = el("select", { id: "state-filter", on: { change: () => reload({ ...current, state: state.value }) } }, STATES.map((s) => el("option", { value: s, selected: s === (current.state || "") }, s || "any state")));
  const tenant = who.sees_all_tenants
    ? el("input", { id: "tenant-filter", type: "text", name: "tenant", value: current.tenant || "", title: "tenant", on: { change: () => reload({ ...current, tenant: tenant.value.trim() }) } })
    : null;
  return el("div", { class: "toolbar" }, el("label", null, "State ", state), tenant ? el("label", null, "Tenant ", tenant) : el("span", { class: "muted" }, `tenant ${who.tenant}`), el("button", { type: "button", on: { click: () => reload(current) } }, "Refresh"));
}

/** The task list; it refreshes itself while it is the view shown (``alive()``). */
export async function taskList(container, who, alive) {
  let current = {};
  const list = el("div", { id: "task-list" });
  const draw = async (wanted) => {
    current = wanted;
    try {
      const body = await getJson("/v1/tasks", { state: current.state, tenant: current.tenant, limit: 200 });
      const tasks = body.tasks || [];
      show(
        list,
        tasks.length
          ? table(["TASK", "TENANT", "STATE", "TARGET", "PRIORITY", "COST", "BUDGET", "AGE", "WHY"], tasks.map(taskRow), { id: "task-table" })
          : el("p", { class: "muted", id: "no-tasks" }, "No tasks."),
        body.next_cursor ? el("p", { class: "muted" }, "Newest 200 shown; use filters or fusionctl tasks list --all for more.") : null,
      );
    } catch (error) {
      show(list, problem(error));
    }
  };
  const header = el("div");
  const reload = (wanted) => {
    show(header, filters(who, wanted, reload));
    return draw(wanted);
  };
  show(container, el("h2", null, who.sees_all_tenants ? "Tasks, every tenant" : `Tasks of ${who.tenant}`), header, list);
  await reload(current);
  // live: a task event redraws the list (at most every STREAM_REDRAW_MS); the timer then only backs the stream up
  let streaming = false;
  let ticks = 0;
  let queued = null;
  const redraw = () => {
    if (queued === null) queued = window.setTimeout(() => { queued = null; if (alive()) draw(current); }, STREAM_REDRAW_MS);
  };
  followEvents(redraw, (open) => { streaming = open; list.dataset.stream = open ? "live" : "polling"; }, alive);
  const timer = window.setInterval(() => {
    if (!alive()) return window.clearInterval(timer);
    ticks += 1;
    if (!streaming || ticks % STREAMING_REFRESH_EVERY === 0) draw(current);
  }, REFRESH_MS);
}

function eventsTable(events) {
  if (!events.length) return el("p", { class: "muted" }, "Events: none");
  return table(
    ["AT", "KIND", "FROM", "TO", "ACTOR", "DETAIL"],
    events.map((e) => ({
      props: { class: e.kind === "attempt.failover" ? "event failover" : "event" },
      cells: [e.at || "", { cell: e.kind, class: "mono" }, e.from_state || "", e.to_state || "", e.actor || "", { cell: JSON.stringify(e.detail || {}), class: "mono" }],
    })),
    { id: "events" },
  );
}

/** One task: what it is, where it ran, and for operators why it ran there. */
export async function taskPage(container, who, taskId) {
  show(container, el("p", { class: "muted" }, "Loading…"));
  let task;
  let events;
  try {
    [task, events] = await Promise.all([getJson(`/v1/tasks/${segment(taskId)}`), getJson(`/v1/tasks/${segment(taskId)}/events`)]);
  } catch (error) {
    show(container, el("h2", null, "Task ", el("code", null, taskId)), problem(error));
    return;
  }
  const failovers = (events.events || []).filter((e) => e.kind === "attempt.failover").length;
  let whyThere = el("p", { class: "muted", id: "receipt-hidden" }, "The placement receipt is for operators.");
  if (who.sees_all_tenants) {
    try {
      whyThere = receipt(await getJson(`/v1/tasks/${segment(taskId)}/decision`));
    } catch (error) {
      whyThere = problem(error);
    }
  }
  show(
    container,
    el("p", null, el("a", { href: "#/tasks" }, "← all tasks")),
    el("h2", null, "Task ", el("code", { id: "task-id" }, task.id)),
    fields([
      ["tenant", task.tenant],
      ["kind", task.kind],
      ["state", el("span", { class: `state-${task.state}`, id: "task-state" }, task.state)],
      ["target", task.target],
      ["why", why(task)],
      ["priority", task.priority],
      ["sensitivity", task.data_sensitivity],
      ["cost so far", cost(task)],
      ["budget", money(task.budget_usd)],
      ["deadline", task.deadline_seconds ? `${task.deadline_seconds}s` : ""],
      ["source", task.source_uri],
      ["target image", task.target_uri],
      ["output", task.output_uri],
      ["labels", Object.keys(task.labels || {}).length ? JSON.stringify(task.labels) : ""],
      ["created", `${task.created_at} (${age(task.created_at)} ago)`],
      ["failovers", String(failovers)],
    ]),
    whyThere,
    el("h3", null, "Attempts"),
    attemptsTable(task.attempts || []),
    el("h3", null, "Events"),
    eventsTable(events.events || []),
  );
}
