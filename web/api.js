// Calls to the three services, and the one place that turns their error bodies
// (contract §5: {"error","message"}) into messages a person can act on.
import { config } from "./config.js";
import * as auth from "./auth.js";
import * as dpop from "./dpop.js";

export class ApiError extends Error {
  constructor({ status, code, message, fields = [], service, retryAfter = "" }) {
    super(message || code || `HTTP ${status}`);
    this.name = "ApiError";
    this.serviceMessage = message || ""; // the body's "message", for people
    this.status = status;
    this.code = code;
    this.fields = fields;
    this.service = service;
    this.retryAfter = retryAfter;
  }
}

// fieldErrors accepts the shapes validation errors commonly take, so that a
// 422 shows which input was refused whichever one a service chose:
// {"fields":{"items[0].sku":"unknown"}}, {"fields":[{"field","message"}]},
// {"details":[...]}, {"errors":[...]}.
export function fieldErrors(body) {
  if (!body || typeof body !== "object") return [];
  const source = body.fields ?? body.field_errors ?? body.details ?? body.errors;
  if (!source) return [];
  if (Array.isArray(source)) {
    return source
      .map((e) => (typeof e === "string" ? { field: "", message: e } : { field: String(e.field ?? e.path ?? e.name ?? ""), message: String(e.message ?? e.error ?? e.reason ?? "") }))
      .filter((e) => e.field || e.message);
  }
  if (typeof source === "object") {
    return Object.entries(source).map(([field, msg]) => ({ field, message: Array.isArray(msg) ? msg.join(", ") : String(msg) }));
  }
  return [];
}

// request calls a service with the current access token: a DPoP-bound one as
// `Authorization: DPoP` with a fresh proof for this request, any other as
// Bearer. A 401 asking for a DPoP nonce is retried once with the nonce the
// service sent; any other 401 is retried once after a token refresh: the
// access token may have expired while the tab slept.
export async function request(service, path, { method = "GET", body, headers = {}, retried = false, nonceRetried = false } = {}) {
  const base = config.services[service];
  const url = base + path;
  const s = auth.current();
  const token = s?.accessToken;
  const bound = Boolean(token) && s.tokenType === "DPoP";
  const init = {
    method,
    headers: { Accept: "application/json", ...headers },
  };
  if (bound) {
    init.headers.Authorization = `DPoP ${token}`;
    init.headers.DPoP = await dpop.proof({ htm: method, htu: url, accessToken: token });
  } else if (token) {
    init.headers.Authorization = `Bearer ${token}`;
  }
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch {
    throw new ApiError({
      status: 0,
      code: "network_error",
      service,
      message: `Could not reach the ${service} service at ${base}. Is it running, and does it allow this origin (CORS${bound ? ", with the DPoP header" : ""})?`,
    });
  }
  if (bound) {
    const fresh = dpop.rememberNonce(url, res);
    // A nonce challenge is not an expired token: the same token, with a
    // proof carrying the nonce, is the answer (RFC 9449 §9). A new nonce on
    // a 401 whose challenge this page cannot read counts as one.
    const challenge = res.status === 401 && (dpop.asksForNonce(res) || (fresh && !res.headers.get("WWW-Authenticate")));
    if (challenge && !nonceRetried && dpop.nonceFor(url)) {
      return request(service, path, { method, body, headers, retried, nonceRetried: true });
    }
  }
  if (res.status === 401 && token && !retried && auth.canRefresh()) {
    try {
      await auth.refresh();
    } catch (err) {
      throw new ApiError({ status: 401, code: err.code || "login_required", service, message: err.message });
    }
    return request(service, path, { method, body, headers, retried: true, nonceRetried });
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    throw new ApiError({
      status: res.status,
      code: data?.error || `http_${res.status}`,
      message: data?.message || data?.error_description || "",
      fields: fieldErrors(data),
      service,
      retryAfter: res.headers.get("Retry-After") || "",
    });
  }
  return data;
}

// list reads a collection whether a service returns a bare array or wraps it
// ({"orders":[...]}, {"items":[...]}, {"data":[...]}).
export function list(data, key) {
  if (Array.isArray(data)) return data;
  if (data && typeof data === "object") {
    for (const k of [key, "items", "data", "results"]) {
      if (Array.isArray(data[k])) return data[k];
    }
  }
  return [];
}

// describe turns any error into {title, detail, fields, kind, login}.
export function describe(err) {
  const detail = (err instanceof ApiError ? err.serviceMessage : err?.message) || "";
  if (err instanceof auth.AuthError) {
    return { kind: "error", title: "Login failed", detail: `${detail} (${err.code})`, fields: [], login: true };
  }
  if (!(err instanceof ApiError)) {
    return { kind: "error", title: "Something went wrong", detail: detail || String(err), fields: [] };
  }
  switch (err.status) {
    case 0:
      return { kind: "error", title: "Service unreachable", detail, fields: [] };
    case 400:
      return { kind: "error", title: "The request was not understood (400)", detail, fields: err.fields };
    case 401:
      return { kind: "error", title: "Please log in again (401)", detail: detail || "Your session is missing, expired or was revoked.", fields: [], login: true };
    case 403:
      return { kind: "error", title: "Not allowed (403)", detail: detail || "Your account does not have the permission this needs.", fields: [] };
    case 404:
      return { kind: "error", title: "Not found (404)", detail: detail || "It does not exist, or it is not yours to see.", fields: [] };
    case 409:
      return { kind: "warning", title: "Conflict (409)", detail: detail || "That is no longer possible in its current state; reload and try again.", fields: [] };
    case 422:
      return { kind: "error", title: "Some input was not accepted (422)", detail, fields: err.fields };
    case 503:
      return { kind: "error", title: `The ${err.service} service is not ready (503)`, detail: `${detail}${err.retryAfter ? ` Try again in ${err.retryAfter} s.` : ""}`, fields: [] };
    default:
      return { kind: "error", title: `The ${err.service} service answered ${err.status}`, detail, fields: err.fields };
  }
}

export const users = {
  me: () => request("users", "/v1/me"),
  updateMe: (patch) => request("users", "/v1/me", { method: "PATCH", body: patch }),
  list: (page = 0, perPage = 50) => request("users", `/v1/users?page=${page}&per_page=${perPage}`),
  block: (id) => request("users", `/v1/users/${encodeURIComponent(id)}/block`, { method: "POST" }),
  unblock: (id) => request("users", `/v1/users/${encodeURIComponent(id)}/unblock`, { method: "POST" }),
};

export const orders = {
  catalog: () => request("orders", "/v1/catalog"),
  create: (items, idempotencyKey) => request("orders", "/v1/orders", { method: "POST", body: { items }, headers: { "Idempotency-Key": idempotencyKey } }),
  mine: () => request("orders", "/v1/orders"),
  ofUser: (userId) => request("orders", `/v1/orders?user_id=${encodeURIComponent(userId)}`),
  get: (id) => request("orders", `/v1/orders/${encodeURIComponent(id)}`),
  cancel: (id) => request("orders", `/v1/orders/${encodeURIComponent(id)}/cancel`, { method: "POST" }),
};

export const billing = {
  mine: () => request("billing", "/v1/invoices"),
  ofUser: (userId) => request("billing", `/v1/invoices?user_id=${encodeURIComponent(userId)}`),
  forOrder: (orderId, userId) => request("billing", `/v1/invoices?order_id=${encodeURIComponent(orderId)}${userId ? `&user_id=${encodeURIComponent(userId)}` : ""}`),
  pay: (id) => request("billing", `/v1/invoices/${encodeURIComponent(id)}/pay`, { method: "POST" }),
  refund: (id) => request("billing", `/v1/invoices/${encodeURIComponent(id)}/refund`, { method: "POST" }),
};
