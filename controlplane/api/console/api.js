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
