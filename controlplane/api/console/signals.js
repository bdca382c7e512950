// What the planner sees now (GET /v1/signals): every signal's value with its age against its TTL,
// and each poller's health. Operators only; the API answers 403 to anyone else.

import { getJson } from "./api.js";
import { duration, el, problem, show, table } from "./dom.js";

function signalRow(row) {
  return {
    props: { class: `signal ${row.status}` },
    cells: [
      { cell: row.name, class: "mono" },
      row.source,
      row.value === null || row.value === undefined ? "" : String(row.value),
      { cell: duration(row.age_seconds), class: "number" },
      { cell: row.ttl_seconds === null ? "none" : duration(row.ttl_seconds), class: "number" },
      { cell: row.status, class: row.status },
      row.observed_at,
    ],
  };
}

function pollerRow(poller) {
  const failing = poller.failures_in_a_row > 0;
  return {
    props: { class: failing ? "poller stale" : "poller" },
    cells: [
      poller.source,
      { cell: `${poller.interval_s}s`, class: "number" },
      { cell: String(poller.polls), class: "number" },
      poller.last_success_at || "never",
      { cell: String(poller.failures_in_a_row), class: failing ? "number stale" : "number" },
      [poller.last_error || "", ...(poller.problems || []).map((p) => ` ${p}`)].join(""),
      poller.retry_at || "",
    ],
  };
}

export async function signalsPage(container) {
  show(container, el("p", { class: "muted" }, "Loading…"));
  try {
    const body = await getJson("/v1/signals");
    const rows = body.signals || [];
    const stale = rows.filter((row) => row.status !== "fresh").length;
    show(
      container,
      el("h2", null, "Signals"),
      el("p", { class: stale ? "stale" : "muted" }, `Snapshot taken ${body.taken_at}: ${rows.length} signals, ${stale} stale.`),
      rows.length
        ? table(["SIGNAL", "SOURCE", "VALUE", "AGE", "TTL", "STATUS", "OBSERVED AT"], rows.map(signalRow), { id: "signal-table" })
        : el("p", { class: "muted" }, "No signal has been seen yet."),
      el("h3", null, "Pollers"),
      (body.pollers || []).length
        ? table(["SOURCE", "EVERY", "POLLS", "LAST SUCCESS", "FAILURES IN A ROW", "LAST ERROR", "RETRY AT"], body.pollers.map(pollerRow), { id: "poller-table" })
        : el("p", { class: "muted" }, "No pollers."),
    );
  } catch (error) {
    show(container, el("h2", null, "Signals"), problem(error));
  }
}
