// Building the page: every piece of text goes in as a text node, never as markup, so a task id,
// tenant name, label or reason is shown as the characters it is. Attributes come from a short list.

const ATTRIBUTES = new Set(["id", "type", "name", "value", "title", "colspan", "for", "role", "disabled", "selected"]);

/** An internal link: "#/..." only, so no value from the API can become a javascript: or remote URL. */
function safeHref(href) {
  const text = String(href);
  if (!text.startsWith("#/")) throw new Error(`not a console link: ${text}`);
  return text;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** el("td", {class: "id"}, text, ...): an element with safe attributes and text or element children. */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "href") node.setAttribute("href", safeHref(value));
    else if (key === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else if (key.startsWith("data-") || ATTRIBUTES.has(key)) node.setAttribute(key, String(value));
    else throw new Error(`attribute ${key} is not allowed here`);
  }
  return append(node, children);
}

/** A table of rows of cells (text, nodes, or {cell, class}). */
export function table(headers, rows, props) {
  const head = el("thead", null, el("tr", null, headers.map((h) => el("th", null, h))));
  const body = el(
    "tbody",
    null,
    rows.map((row) =>
      el(
        "tr",
        row.props || null,
        (row.cells || row).map((cell) =>
          cell && typeof cell === "object" && !(cell instanceof Node) ? el("td", { class: cell.class }, cell.cell) : el("td", null, cell),
        ),
      ),
    ),
  );
  return el("table", props, head, body);
}

/** A definition list of [label, value] pairs, the value left out when empty. */
export function fields(pairs) {
  return el(
    "dl",
    { class: "fields" },
    pairs.filter(([, value]) => value !== null && value !== undefined && value !== "").map(([label, value]) => [el("dt", null, label), el("dd", null, value)]),
  );
}

/** Seconds as "42s", "7m 3s", "2h 5m", "3d 4h". */
export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** How long ago an ISO 8601 time was, as duration() writes it; "" when absent or unreadable. */
export function age(iso) {
  const at = Date.parse(iso);
  return Number.isNaN(at) ? "" : duration((Date.now() - at) / 1000);
}

export function money(value, unit) {
  return typeof value === "number" ? `$${value.toFixed(value < 1 ? 4 : 2)}${unit || ""}` : "";
}

/** Replace what a container shows. */
export function show(container, ...children) {
  container.replaceChildren();
  return append(container, children);
}

/** An API failure in words: 403 says the token may not read this, not that something broke. */
export function problem(error) {
  if (error && error.status === 403) return el("p", { class: "error" }, `Not for this token: ${error.message}`);
  if (error && error.status === 401) return el("p", { class: "error" }, "The token is no longer valid: log in again.");
  return el("p", { class: "error" }, `Could not load: ${error && error.message ? error.message : String(error)}`);
}
