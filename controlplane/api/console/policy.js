// The policy in force (GET /v1/policy), every version that took effect (GET /v1/policy/history),
// and the difference between two of them (GET /v1/policy/versions/{version}). Operators only.

import { getJson, segment } from "./api.js";
import { el, fields, problem, show, table } from "./dom.js";
import { hunks, lineDiff, pretty } from "./diff.js";

const short = (version) => String(version || "").slice(0, 12);

async function documentOf(version) {
  return (await getJson(`/v1/policy/versions/${segment(version)}`)).document;
}

function diffView(before, after, lines) {
  const changed = lines.some(([mark]) => mark !== " ");
  return el(
    "div",
    { id: "policy-diff" },
    el("h3", null, "Difference ", el("code", null, short(before)), " → ", el("code", null, short(after))),
    changed
      ? el(
          "pre",
          { class: "diff" },
          hunks(lines).map(([mark, line]) => el("span", { class: mark === "+" ? "added" : mark === "-" ? "removed" : null }, `${mark} ${line}\n`)),
        )
      : el("p", { class: "muted" }, "No difference."),
  );
}

function versionPicker(id, versions, chosen) {
  return el("select", { id }, versions.map((item) => el("option", { value: item.version, selected: item.version === chosen }, `${short(item.version)} (${item.applied_at})`)));
}

export async function policyPage(container) {
  show(container, el("p", { class: "muted" }, "Loading…"));
  let active;
  let history;
  try {
    [active, history] = await Promise.all([getJson("/v1/policy"), getJson("/v1/policy/history", { limit: 100 })]);
  } catch (error) {
    show(container, el("h2", null, "Policy"), problem(error));
    return;
  }
  const items = history.items || [];
  // the same version may take effect several times (a rollback): offer each once, newest first
  const versions = items.filter((item, index) => items.findIndex((other) => other.version === item.version) === index);
  const diffArea = el("div");
  const from = versionPicker("diff-from", versions, versions[1] ? versions[1].version : active.version);
  const to = versionPicker("diff-to", versions, active.version);
  const compare = async () => {
    try {
      const [before, after] = await Promise.all([documentOf(from.value), documentOf(to.value)]);
      show(diffArea, diffView(from.value, to.value, lineDiff(pretty(before), pretty(after))));
    } catch (error) {
      show(diffArea, problem(error));
    }
  };
  show(
    container,
    el("h2", null, "Policy"),
    fields([
      ["version", el("code", { id: "policy-version" }, active.version)],
      ["source", active.source],
      ["Consul ModifyIndex", active.modify_index === null ? "" : String(active.modify_index)],
      ["applied at", active.applied_at],
      ["up to date", active.up_to_date ? "yes" : `no: ${active.last_error} (since ${active.last_error_at})`],
      ["tenant overlays", Object.keys(active.tenants || {}).join(", ") || "none"],
    ]),
    el("h3", null, "History"),
    items.length
      ? table(
          ["APPLIED AT", "VERSION", "BY", "SOURCE", "MODIFY INDEX", "TENANT OVERLAYS"],
          items.map((item) => ({
            props: { class: "policy-application" },
            cells: [item.applied_at, { cell: short(item.version), class: "mono" }, item.applied_by || "", item.source || "", item.modify_index === null ? "" : String(item.modify_index), Object.keys(item.tenants || {}).join(", ")],
          })),
          { id: "policy-history" },
        )
      : el("p", { class: "muted" }, "No history yet."),
    el("div", { class: "toolbar" }, el("label", null, "From ", from), el("label", null, "to ", to), el("button", { type: "button", id: "diff-button", on: { click: compare } }, "Compare")),
    diffArea,
    el("h3", null, "Document in force"),
    el("pre", { class: "diff", id: "policy-document" }, pretty(active.document).join("\n")),
  );
  if (versions.length > 1) await compare();
}
