// Calls to the service's JSON API. The token (when the service has tokens) lives in this tab's
// sessionStorage and travels only in the Authorization header: never in a URL, never logged.

const TOKEN_KEY = "video-api-token";
let token = sessionStorage.getItem(TOKEN_KEY);
let unauthorized = () => {};

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// A schema of the OpenAPI document with its "$ref" followed.
export function resolve(openapi, schema) {
  let node = schema;
  while (node?.$ref) node = node.$ref.split("/").slice(1).reduce((parent, key) => parent[key], openapi);
  return node;
}

export function hasToken() {
  return Boolean(token);
}

// A candidate is used for requests at once but kept in sessionStorage only once the API accepted it.
export function useToken(value, keep) {
  token = value || null;
  if (token && keep) sessionStorage.setItem(TOKEN_KEY, token);
  else if (!token) sessionStorage.removeItem(TOKEN_KEY);
}

export function onUnauthorized(handler) {
  unauthorized = handler;
}

export function authHeaders(headers = {}) {
  return token ? { ...headers, Authorization: `Bearer ${token}` } : headers;
}

async function failure(response) {
  const body = await response.json().catch(() => null);
  const error = new ApiError(
    response.status,
    body?.error?.code ?? "http_error",
    body?.error?.message ?? `HTTP ${response.status} ${response.statusText}`,
    response.headers.get("Retry-After"),
  );
  if (response.status === 401) unauthorized(error);
  return error;
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = authHeaders({ Accept: "application/json" });
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// The stream of a task's events; stream.js reads it (EventSource could not send Authorization).
export async function openEvents(taskId, lastEventId, signal) {
  const headers = authHeaders({ Accept: "text/event-stream" });
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await fetch(`/api/tasks/${taskId}/events`, { headers, signal, cache: "no-store" });
  if (!response.ok) throw await failure(response);
  return response.body;
}

const sizes = new Map();
const waiting = [];
let running = 0;

// Content-Length of a produced file, by HEAD (the status object has no file sizes); two at a time.
export function fileSize(url) {
  if (!sizes.has(url)) {
    sizes.set(url, new Promise((resolve) => waiting.push({ url, resolve })));
    next();
  }
  return sizes.get(url);
}

function next() {
  if (running >= 2 || !waiting.length) return;
  const { url, resolve } = waiting.shift();
  running += 1;
  fetch(url, { method: "HEAD", headers: authHeaders() })
    .then((response) => resolve(response.ok ? Number(response.headers.get("Content-Length")) : null))
    .catch(() => resolve(null))
    .finally(() => {
      running -= 1;
      next();
    });
}

function filename(disposition) {
  const match = /filename\*=UTF-8''([^;]+)/i.exec(disposition ?? "");
  return match ? decodeURIComponent(match[1]) : "download";
}

// With a token a plain link cannot authenticate: fetch the file with the header into a Blob
// (held in this tab's memory until saved) and save it under the service's file name.
export async function saveWithToken(url) {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename(response.headers.get("Content-Disposition"));
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}
