// The console's shell: log in with a token, then draw the view the address names (#/tasks,
// #/tasks/ID, #/signals, #/policy, #/reports). Which views a token gets follows GET /v1/whoami;
// the API refuses the rest on its own.

import { ApiError, getJson, session } from "./api.js";
import { el, problem, show } from "./dom.js";
import { policyPage } from "./policy.js";
import { reportsPage } from "./reports.js";
import { signalsPage } from "./signals.js";
import { taskList, taskPage } from "./tasks.js";

const byId = (id) => document.getElementById(id);
let who = null;
// each drawing gets a number: a view still loading when the address changed draws nothing more
let drawing = 0;

function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // a malformed %-escape: shown as typed, and no task has that id
  }
}

function route() {
  const parts = window.location.hash.replace(/^#\/?/, "").split("/");
  return { view: parts[0] || "tasks", argument: parts.length > 1 ? decoded(parts.slice(1).join("/")) : null };
}

async function draw() {
  const number = ++drawing;
  const alive = () => number === drawing && who !== null;
  const view = byId("view");
  const { view: name, argument } = route();
  for (const link of byId("nav").querySelectorAll("a")) link.classList.toggle("current", link.getAttribute("href") === `#/${name}`);
  if (name === "tasks" && argument) return taskPage(view, who, argument);
  if (name === "tasks") return taskList(view, who, alive);
  if (name === "signals") return signalsPage(view);
  if (name === "policy") return policyPage(view);
  if (name === "reports") return reportsPage(view);
  show(view, el("p", { class: "error" }, "No such page."));
}

function loggedIn(principal) {
  who = principal;
  byId("login").hidden = true;
  byId("nav").hidden = false;
  byId("who").hidden = false;
  show(byId("who-text"), `${principal.name} (${principal.role}, tenant ${principal.tenant})`);
  for (const link of byId("nav").querySelectorAll("[data-operators-only]")) link.hidden = !principal.sees_all_tenants;
  return draw();
}

function loggedOut(message) {
  who = null;
  drawing += 1;
  session.forget();
  byId("nav").hidden = true;
  byId("who").hidden = true;
  byId("login").hidden = false;
  show(byId("view"));
  show(byId("login-error"), message || "");
  byId("token").focus();
}

async function logIn(token) {
  session.keep(token);
  try {
    await loggedIn(await getJson("/v1/whoami"));
  } catch (error) {
    const refused = error instanceof ApiError && (error.status === 401 || error.status === 403);
    loggedOut(refused ? `That token was refused: ${error.message}` : problem(error).textContent);
  }
}

function start() {
  byId("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("token");
    const token = input.value.trim();
    input.value = "";
    if (token) logIn(token);
  });
  byId("logout").addEventListener("click", () => loggedOut("Logged out."));
  window.addEventListener("hashchange", () => (who ? draw() : undefined));
  const kept = session.token();
  if (kept) logIn(kept);
  else loggedOut();
}

start();
