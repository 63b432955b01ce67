// Live order and invoice updates for the signed-in user, over NATS (nats.js).
// orders publishes authmesh.live.<uid>.orders.<order_id> and billing
// authmesh.live.<uid>.invoices.<invoice_id>, with the status only; the server
// lets a token subscribe to its own user's subjects, per read permission.
import { config } from "./config.js";
import { base64url } from "./auth.js";
import { connect } from "./nats.js";

// uid is a user's subject token: base64url (no padding) of the UTF-8 bytes
// of the token's sub, so "auth0|alice" or any other sub is one valid token.
export function uid(sub) {
  return base64url(new TextEncoder().encode(sub));
}

// subjects lists what the claims may subscribe to: one subject per
// collection whose read permission the token holds.
export function subjects(claims) {
  if (!claims?.sub) return [];
  const held = new Set(Array.isArray(claims.permissions) ? claims.permissions : []);
  const base = `authmesh.live.${uid(claims.sub)}`;
  const out = [];
  if (held.has("read:orders")) out.push(`${base}.orders.>`);
  if (held.has("read:invoices")) out.push(`${base}.invoices.>`);
  return out;
}

const kinds = { orders: "order", invoices: "invoice" };

// update reads a message into {kind, id, status, order_id?}, or null when
// it is not one: the payload must name the same kind and id as its subject.
export function update(msg) {
  const [, , , collection, ...rest] = msg.subject.split(".");
  const id = rest.join(".");
  let body;
  try {
    body = msg.json();
  } catch {
    return null;
  }
  if (!body || body.kind !== kinds[collection] || body.id !== id || typeof body.status !== "string") return null;
  return body.kind === "invoice" ? { kind: "invoice", id, order_id: String(body.order_id || ""), status: body.status } : { kind: "order", id, status: body.status };
}

// A DPoP-bound token is not a bearer token at NATS either: CONNECT carries a
// DPoP proof of the session's key with htm and htu below (htu under .invalid,
// served by no HTTP edge) and nonce the server's INFO nonce, fresh for every
// connection (pkg/platform/callout: ProofMethod, ProofURI).
export const connectProof = Object.freeze({ htm: "CONNECT", htu: "https://nats.invalid/connect" });

// start connects with the session's current token (asked again on every
// reconnect) and subscribes to what the claims allow. onUpdate gets each
// update; onState(state, error) gets connection states and errors.
// proveConnect(info, token), for a DPoP-bound token, returns CONNECT's proof
// (see connectProof). It returns the nats.js Connection: close() ends it.
export function start({ claims, getToken, proveConnect = null, onUpdate, onState, url = config.nats }) {
  const conn = connect({ url, getToken, proveConnect, name: "authmesh-web" });
  conn.addEventListener("status", (e) => onState(e.detail.state, null));
  conn.addEventListener("error", (e) => onState(conn.state, e.detail));
  for (const subject of subjects(claims)) {
    conn.subscribe(subject, (msg) => {
      const u = update(msg);
      if (u) onUpdate(u);
    });
  }
  return conn;
}
