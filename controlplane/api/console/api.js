// The JSON API with the token of this tab. The server decides what a token may read;
// the console only shows what it was given, and says so when it was refused.

const TOKEN_KEY = "fusionplane.console.token";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  keep: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  forget: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.field = error.field || null;
  }
}

function request(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  const headers = { Accept: "application/json" };
  const token = session.token();
  if (token) headers.Authorization = `Bearer ${token}`;
  // no cookies: the bearer token is the only credential, so no other site can make this request for us
  return fetch(url, { headers, credentials: "omit", cache: "no-store", redirect: "error" });
}

async function failure(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    error = {};
  }
  return new ApiError(response.status, error);
}

/** GET a JSON document; throws ApiError on any non-2xx answer. */
export async function getJson(path, params) {
  const response = await request(path, params);
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** GET a file as a Blob (a simulator report); throws ApiError on any non-2xx answer. */
export async function getBlob(path) {
  const response = await request(path);
  if (!response.ok) throw await failure(response);
  return response.blob();
}

/** A path segment: ids and names are never pasted into a URL as they are. */
export const segment = (value) => encodeURIComponent(String(value));

/**
 * Follow GET /v1/events (Server-Sent Events) with this tab's token while ``alive()``: ``onEvent(kind)`` per task
 * event, ``onState(true|false)`` when the stream opens or drops. fetch, not EventSource: EventSource cannot send
 * the Authorization header. Resumes from the last event id after the server's time limit or a dropped connection.
 */
export async function followEvents(onEvent, onState, alive) {
  let lastId = null;
  while (alive()) {
    const headers = { Accept: "text/event-stream" };
    const token = session.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (lastId) headers["Last-Event-ID"] = lastId;
    let opened = false;
    try {
      const response = await fetch(new URL("/v1/events", window.location.origin), { headers, credentials: "omit", cache: "no-store", redirect: "error" });
      if (!response.ok || !response.body) throw new ApiError(response.status, {});
      opened = true;
      onState(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let pending = "";
      while (alive()) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += value;
        let end;
        while ((end = pending.indexOf("\n\n")) >= 0) {
          const frame = pending.slice(0, end);
          pending = pending.slice(end + 2);
          let kind = null;
          for (const line of frame.split("\n")) {
            if (line.startsWith("id: ")) lastId = line.slice(4);
            else if (line.startsWith("event: ")) kind = line.slice(7);
          }
          if (kind) onEvent(kind); // comments (heartbeats) and the retry hint carry no event
        }
      }
      await reader.cancel();
    } catch {
      // refused or dropped: the list's own refresh carries on meanwhile
    }
    onState(false);
    // at once after the server's time limit (a clean end), after a pause when the stream failed
    await new Promise((resolve) => window.setTimeout(resolve, opened ? 500 : 5000));
  }
}
