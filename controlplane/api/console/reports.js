// The simulator's HTML reports (GET /v1/simulator/reports). A report is fetched with this tab's token
// and saved as a file: it is a page of its own, with its own inline style, which this page's CSP
// (rightly) would not draw, and it must not run inside the console's origin.

import { getBlob, getJson, segment } from "./api.js";
import { el, problem, show, table } from "./dom.js";

async function save(name, status) {
  try {
    const blob = await getBlob(`/v1/simulator/reports/${segment(name)}`);
    const url = URL.createObjectURL(new Blob([blob], { type: "application/octet-stream" }));
    const link = document.createElement("a");
    link.setAttribute("href", url);
    link.setAttribute("download", name);
    link.click();
    window.setTimeout(() => URL.revokeObjectURL(url), 60000);
    show(status, `Saved ${name}: open it from your downloads.`);
  } catch (error) {
    show(status, problem(error));
  }
}

export async function reportsPage(container) {
  show(container, el("p", { class: "muted" }, "Loading…"));
  try {
    const body = await getJson("/v1/simulator/reports");
    const status = el("p", { class: "muted", id: "report-status" });
    const reports = body.reports || [];
    show(
      container,
      el("h2", null, "Simulator reports"),
      !body.configured
        ? el("p", { class: "muted" }, "No reports folder is configured (FUSIONPLANE_SIM_REPORTS_DIR; make sim writes build/sim/).")
        : reports.length
          ? table(
              ["REPORT", "WRITTEN AT", "SIZE", ""],
              reports.map((r) => ({
                props: { class: "report" },
                cells: [{ cell: r.name, class: "mono" }, r.modified_at, { cell: `${Math.ceil(r.bytes / 1024)} KiB`, class: "number" }, el("button", { type: "button", on: { click: () => save(r.name, status) } }, "Save")],
              })),
              { id: "report-table" },
            )
          : el("p", { class: "muted" }, "No report yet: fusionctl sim run SCENARIO --report FILE.html writes one."),
      status,
    );
  } catch (error) {
    show(container, el("h2", null, "Simulator reports"), problem(error));
  }
}
