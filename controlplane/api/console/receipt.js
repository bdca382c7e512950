// A task's receipt drawn as `fusionctl explain` prints it: every decision (policy version, signals
// with their age, candidates in order with their reasons, rejections, trace), then the attempts.

import { duration, el, fields, money, table } from "./dom.js";

function signalRow(name, used) {
  const signal = used !== null && typeof used === "object" ? used : { value: used };
  const mark = signal.missing ? "MISSING" : signal.stale ? "STALE" : "fresh";
  return [
    { cell: name, class: "mono" },
    signal.value === undefined || signal.value === null ? "" : String(signal.value),
    typeof signal.age_seconds === "number" ? duration(signal.age_seconds) : "",
    typeof signal.ttl_seconds === "number" ? duration(signal.ttl_seconds) : "",
    { cell: mark, class: mark.toLowerCase() },
  ];
}

function estimate(candidate) {
  if (candidate.completion_chance === null || candidate.completion_chance === undefined) return [];
  const usd = candidate.expected_usd_per_task;
  const seen = candidate.history_launches;
  return [
    `${usd === null || usd === undefined ? "unknown" : money(usd)} per completed task`,
    `chance ${Number(candidate.completion_chance).toFixed(3)} (${seen ? `${seen} launches seen` : "priors only"})`,
  ];
}

function candidateItem(candidate) {
  const details = [candidate.provider, candidate.private ? "private" : "cloud"];
  if (candidate.region) details.push(`region ${candidate.region}`);
  if (candidate.instance_type) details.push(`type ${candidate.instance_type}`);
  if (typeof candidate.expected_usd_h === "number") details.push(`expected ${money(candidate.expected_usd_h, "/h")}`);
  if (typeof candidate.max_price_usd_h === "number") details.push(`max ${money(candidate.max_price_usd_h, "/h")}`);
  if (candidate.market) details.push(String(candidate.market));
  details.push(...estimate(candidate));
  if (candidate.hedge_group !== null && candidate.hedge_group !== undefined) details.push(`hedge group ${candidate.hedge_group}`);
  return el(
    "li",
    { class: "candidate", "data-target": candidate.target },
    el("strong", null, candidate.target),
    ` (${details.join(", ")})`,
    el("ul", { class: "reasons" }, (candidate.reasons || []).map((reason) => el("li", { class: "reason" }, reason))),
  );
}

function decision(plan, number, count) {
  const signals = Object.entries(plan.signals_used || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const candidates = plan.candidates || [];
  const rejections = plan.rejections || [];
  const trace = plan.trace || [];
  return el(
    "section",
    { class: "decision" },
    el("h3", null, `Decision ${number} of ${count}`),
    fields([
      ["policy version", plan.policy_version ? String(plan.policy_version).slice(0, 12) : ""],
      ["decided at", plan.decided_at],
      ["plan again by", plan.replan_by ? `${plan.replan_by} (the deadline rule holds on-demand back until then)` : ""],
    ]),
    signals.length
      ? [el("h4", null, "Signals used"), table(["SIGNAL", "VALUE", "AGE", "TTL", ""], signals.map(([k, v]) => signalRow(k, v)), { class: "signals" })]
      : el("p", { class: "muted" }, "Signals used: none"),
    candidates.length
      ? [el("h4", null, "Candidates (in order)"), el("ol", { class: "candidates" }, candidates.map(candidateItem))]
      : el("p", { class: "muted" }, "Candidates: none (nowhere to run it)"),
    rejections.length
      ? [
          el("h4", null, "Rejected"),
          table(
            ["TARGET", "CODE", "DETAIL"],
            rejections.map((r) => ({ props: { class: "rejection" }, cells: [r.target, { cell: r.code, class: "mono" }, r.detail] })),
            { class: "rejections" },
          ),
        ]
      : el("p", { class: "muted" }, "Rejected: none"),
    trace.length ? [el("h4", null, "Trace"), el("ol", { class: "trace" }, trace.map((line) => el("li", null, line)))] : null,
  );
}

export function attemptsTable(attempts) {
  if (!attempts.length) return el("p", { class: "muted" }, "Attempts: none");
  return table(
    ["#", "TARGET", "PROVIDER", "STATE", "EXIT", "REASON", "STARTED", "LAST HEARTBEAT"],
    attempts.map((a) => ({
      props: { class: "attempt" },
      cells: [
        { cell: a.number, class: "number" },
        a.target,
        a.provider,
        { cell: a.state, class: `state-${a.state}` },
        a.exit_code === null || a.exit_code === undefined ? "" : String(a.exit_code),
        a.reason || "",
        a.created_at || "",
        a.last_heartbeat_at || "",
      ],
    })),
    { id: "attempts" },
  );
}

/** The receipt of GET /v1/tasks/{id}/decision: its decisions and attempts (the task is drawn by the caller). */
export function receipt(body) {
  const decisions = body.decisions || [];
  return el(
    "div",
    { id: "receipt" },
    el("h3", null, "Placement receipt"),
    decisions.length ? decisions.map((plan, i) => decision(plan, i + 1, decisions.length)) : el("p", { class: "muted" }, "No placement decision yet."),
    decisions.length > 1 ? el("p", { class: "muted" }, `${decisions.length - 1} failover(s) or replan(s): each appended a decision.`) : null,
  );
}
