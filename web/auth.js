// Authorization code flow with PKCE (RFC 7636, S256) against an Auth0-style
// tenant. Tokens live in this module's memory only: nothing that could be
// replayed is written to storage, so a reload means logging in again. The only
// thing stored is the short-lived login transaction (PKCE verifier and state),
// in sessionStorage, because it has to survive the redirect to the tenant; it
// is deleted as soon as the callback is handled.
//
// With config.dpop, token requests carry a DPoP proof (dpop.js) by the
// session's key, so the tenant binds the tokens to it (token_type DPoP); the
// key is dropped with the session.
import { config } from "./config.js";
import * as dpop from "./dpop.js";

const TXN_KEY = "authmesh.login-transaction";
const TXN_MAX_AGE_MS = 10 * 60 * 1000;

export class AuthError extends Error {
  constructor(code, description, status = 0) {
    super(description || code);
    this.name = "AuthError";
    this.code = code;
    this.status = status;
  }
}

let session = null; // {accessToken, tokenType, refreshToken, expiresAt, claims, ...}
let refreshing = null;
let refreshTimer = 0;
const listeners = new Set();

// onChange registers fn(session | null, reason, error) for logins, refreshes and ends.
export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(reason, err) {
  for (const fn of listeners) fn(session, reason, err);
}

export function base64url(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(byteLength) {
  const bytes = new Uint8Array(byteLength);
  crypto.getRandomValues(bytes);
  return base64url(bytes);
}

export async function pkceChallenge(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

// decodeClaims reads a JWT payload for display and UI decisions only; the
// services verify the signature, this page never trusts it for anything else.
export function decodeClaims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0)));
    return JSON.parse(json);
  } catch {
    return {};
  }
}

function endpoint(path) {
  return new URL(path, config.issuer).toString();
}

// login sends the browser to the tenant's /authorize; it does not return.
export async function login() {
  if (!window.isSecureContext || !crypto.subtle) {
    throw new AuthError("insecure_context", "Logging in needs a secure page (https, or http://localhost) for PKCE's SHA-256; open the app at such an address.");
  }
  const verifier = randomString(32); // 43 characters, RFC 7636's minimum
  const state = randomString(16);
  sessionStorage.setItem(TXN_KEY, JSON.stringify({ verifier, state, at: Date.now() }));
  const url = new URL(endpoint("authorize"));
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: config.clientId,
    redirect_uri: config.redirectUri,
    audience: config.audience,
    scope: config.scope,
    state,
    code_challenge: await pkceChallenge(verifier),
    code_challenge_method: "S256",
  }).toString();
  window.location.assign(url.toString());
}

// handleRedirect finishes a login when the page is loaded as the callback.
// It returns false when the URL carries no authorization response.
export async function handleRedirect() {
  const params = new URLSearchParams(window.location.search);
  if (!params.has("code") && !params.has("error")) return false;

  // A new login is a new session: a new DPoP key, whatever came before.
  dpop.reset();
  const raw = sessionStorage.getItem(TXN_KEY);
  sessionStorage.removeItem(TXN_KEY);
  // The code must not linger in the address bar or the history.
  window.history.replaceState(null, "", new URL(".", new URL(config.redirectUri)).pathname);

  if (params.has("error")) {
    throw new AuthError(params.get("error"), params.get("error_description") || "The login was not completed.");
  }
  let txn = null;
  try {
    txn = JSON.parse(raw);
  } catch {
    txn = null;
  }
  if (!txn || !txn.state || txn.state !== params.get("state") || Date.now() - txn.at > TXN_MAX_AGE_MS) {
    throw new AuthError("invalid_state", "This login response does not belong to a login started here (or it is too old). Please log in again.");
  }
  await tokenRequest(
    {
      grant_type: "authorization_code",
      client_id: config.clientId,
      code: params.get("code"),
      code_verifier: txn.verifier,
      redirect_uri: config.redirectUri,
    },
    "login",
  );
  return true;
}

// usesDPoP says whether token requests carry DPoP proofs.
export function usesDPoP() {
  return Boolean(config.dpop) && dpop.supported();
}

// postToken POSTs a token request, with a DPoP proof when enabled, and
// retries once with the tenant's nonce when it answers use_dpop_nonce (Auth0
// asks public clients for one on their first DPoP request).
async function postToken(form, nonceRetried = false) {
  const url = endpoint("oauth/token");
  const headers = { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" };
  // Without DPoP, form encoding keeps this a CORS "simple request"; the DPoP
  // header makes the browser ask the tenant first (preflight), which must
  // allow it.
  if (usesDPoP()) headers.DPoP = await dpop.proof({ htm: "POST", htu: url });
  let res;
  try {
    res = await fetch(url, { method: "POST", headers, body: new URLSearchParams(form) });
  } catch {
    throw new AuthError("network_error", `Could not reach the tenant at ${url} (is it running, and does it allow this origin${usesDPoP() ? " and the DPoP header" : ""}?).`);
  }
  let body = {};
  try {
    body = await res.json();
  } catch {
    body = {};
  }
  if (usesDPoP()) {
    const fresh = dpop.rememberNonce(url, res);
    if (!nonceRetried && dpop.asksForNonce(res, body)) {
      if (!fresh && !dpop.nonceFor(url)) {
        throw new AuthError("use_dpop_nonce", "The tenant asks for a DPoP nonce but this page cannot read it: its CORS answer must expose the DPoP-Nonce header.", res.status);
      }
      return postToken(form, true);
    }
  }
  return { res, body };
}

async function tokenRequest(form, reason) {
  const { res, body } = await postToken(form);
  if (!res.ok || !body.access_token) {
    throw new AuthError(body.error || `http_${res.status}`, body.error_description || body.message || `The tenant answered ${res.status}.`, res.status);
  }
  const previous = session;
  session = {
    accessToken: body.access_token,
    // DPoP: the token is bound to this session's key and every call needs a
    // proof (api.js). Bearer: the tenant did not bind it (DPoP off here, or
    // not enabled for the API), and it is sent as before.
    tokenType: /^dpop$/i.test(body.token_type || "") ? "DPoP" : "Bearer",
    // With rotation every refresh returns a new refresh token and the old one
    // dies; without it, the old one stays valid and is kept.
    refreshToken: body.refresh_token || previous?.refreshToken || null,
    expiresAt: Date.now() + (Number(body.expires_in) || 0) * 1000,
    claims: decodeClaims(body.access_token),
    // Display only (email, name) until the users service answers; the ID
    // token authorizes nothing here.
    profile: body.id_token ? decodeClaims(body.id_token) : previous?.profile || {},
    refreshedAt: reason === "refresh" ? Date.now() : previous?.refreshedAt || null,
    refreshCount: reason === "refresh" ? (previous?.refreshCount || 0) + 1 : 0,
  };
  scheduleRefresh();
  emit(reason);
  return session;
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session?.refreshToken || !session.expiresAt) return;
  const due = session.expiresAt - config.refreshLeewaySeconds * 1000 - Date.now();
  // setTimeout overflows past ~24.8 days; tokens never live that long here.
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.min(Math.max(due, 5000), 2 ** 31 - 1));
}

// refresh trades the refresh token for new tokens. Concurrent callers share one
// request: with rotation, two requests with the same token would look like
// reuse and revoke the whole family.
export function refresh() {
  if (!session?.refreshToken) return Promise.reject(new AuthError("login_required", "Your session has ended. Please log in again."));
  if (!refreshing) {
    const form = { grant_type: "refresh_token", client_id: config.clientId, refresh_token: session.refreshToken };
    refreshing = tokenRequest(form, "refresh")
      .catch((err) => {
        end("refresh_failed", err);
        throw err;
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

function end(reason, err) {
  clearTimeout(refreshTimer);
  session = null;
  // The key goes with the session; tokens bound to it are worthless now.
  dpop.reset();
  emit(reason, err);
}

export function current() {
  return session;
}

export function canRefresh() {
  return Boolean(session?.refreshToken);
}

export function permissions() {
  const p = session?.claims?.permissions;
  return new Set(Array.isArray(p) ? p : []);
}

export function roles() {
  const r = session?.claims?.["https://authmesh.dev/roles"];
  return Array.isArray(r) ? r : [];
}

// logout forgets the tokens and revokes the refresh token's family (RFC 7009),
// so a copy of it is worthless. With tenantLogout it also ends the tenant's
// own login session, which Auth0 keeps in a cookie, and comes back here.
export async function logout() {
  const refreshToken = session?.refreshToken;
  end("logout");
  if (refreshToken) {
    try {
      await fetch(endpoint("oauth/revoke"), {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ client_id: config.clientId, token: refreshToken }),
      });
    } catch {
      // The tokens are gone from this page either way; the refresh token
      // expires on its own.
    }
  }
  if (config.tenantLogout) {
    const url = new URL(endpoint("v2/logout"));
    url.search = new URLSearchParams({ client_id: config.clientId, returnTo: config.logoutReturnTo }).toString();
    window.location.assign(url.toString());
  }
}
