// DPoP (RFC 9449): proof of possession for this page's tokens. A login
// session gets its own ECDSA P-256 key, generated non-extractable: the private
// key never leaves WebCrypto, so a token copied out of this page is useless
// without a proof that only this page can sign. The key lives in this module's
// memory only (never in storage, like the tokens) and is dropped when the
// session ends; the next login gets a new one, and with it new tokens bound
// to it. Script running in the page can still sign while it runs (§11.4).
//
// Every request that carries a bound token, and every token request, carries
// a fresh proof: a compact JWS over {jti, htm, htu, iat[, ath][, nonce]}
// whose header holds the public key.

const te = new TextEncoder();

function b64url(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function b64urlJSON(value) {
  return b64url(te.encode(JSON.stringify(value)));
}

let keyPromise = null; // Promise<{privateKey, jwk}>, one per session
const nonces = new Map(); // origin -> the latest DPoP-Nonce it handed out

// supported says whether this browser can sign proofs (WebCrypto needs a
// secure context: https, or http://localhost).
export function supported() {
  return Boolean(globalThis.isSecureContext && globalThis.crypto?.subtle);
}

async function generate() {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false /* non-extractable */, ["sign"]);
  // The public half is always extractable. Only the members a JWK thumbprint
  // covers go into proofs, not key_ops or ext.
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  return { privateKey: pair.privateKey, jwk: { kty, crv, x, y } };
}

// key returns the session's key, creating it on first use. Concurrent first
// callers share one key.
export function key() {
  if (!keyPromise) {
    keyPromise = generate();
    keyPromise.catch(() => {
      keyPromise = null;
    });
  }
  return keyPromise;
}

// publicJwk is the session key's public JWK {kty, crv, x, y}.
export async function publicJwk() {
  return { ...(await key()).jwk };
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of the session key: what a
// bound token carries as cnf.jkt.
export async function thumbprint() {
  const { crv, kty, x, y } = (await key()).jwk;
  // Required members only, in lexicographic order, no whitespace.
  const canonical = JSON.stringify({ crv, kty, x, y });
  return b64url(new Uint8Array(await crypto.subtle.digest("SHA-256", te.encode(canonical))));
}

// htuOf is the proof's htu for a request URL: without query and fragment
// (RFC 9449 §4.2).
export function htuOf(url) {
  const u = new URL(url, globalThis.location?.href);
  u.search = "";
  u.hash = "";
  return u.href;
}

// ath is base64url(SHA-256(access token)), binding a proof to one token.
export async function ath(accessToken) {
  return b64url(new Uint8Array(await crypto.subtle.digest("SHA-256", te.encode(accessToken))));
}

// proof signs a DPoP proof for one request. htm is the HTTP method, htu the
// request URL (its query and fragment are dropped); accessToken adds ath (for
// resource requests, not token requests); nonce defaults to the latest one
// htu's origin handed out.
export async function proof({ htm, htu, accessToken, nonce = nonceFor(htu) }) {
  const { privateKey, jwk } = await key();
  const jti = new Uint8Array(16); // 128 random bits (§4.2 asks for ≥ 96)
  crypto.getRandomValues(jti);
  const claims = { jti: b64url(jti), htm: String(htm).toUpperCase(), htu: htuOf(htu), iat: Math.floor(Date.now() / 1000) };
  if (accessToken) claims.ath = await ath(accessToken);
  if (nonce) claims.nonce = nonce;
  const input = `${b64urlJSON({ typ: "dpop+jwt", alg: "ES256", jwk })}.${b64urlJSON(claims)}`;
  // WebCrypto's ECDSA signature is raw r||s, which is exactly JWS ES256's
  // format (RFC 7518 §3.4): no DER to unwrap.
  const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, te.encode(input));
  return `${input}.${b64url(new Uint8Array(sig))}`;
}

function originOf(url) {
  return new URL(url, globalThis.location?.href).origin;
}

// nonceFor is the latest server nonce from url's origin ("" when none).
export function nonceFor(url) {
  return nonces.get(originOf(url)) || "";
}

// rememberNonce keeps the DPoP-Nonce a response from url carries (RFC 9449
// §8, §9: use it until the server hands out another). It returns the nonce
// when the response brought a new one, else "". The header is readable
// cross-origin only if the server lists it in Access-Control-Expose-Headers.
export function rememberNonce(url, response) {
  const n = response?.headers?.get("DPoP-Nonce");
  if (!n) return "";
  const origin = originOf(url);
  const changed = nonces.get(origin) !== n;
  nonces.set(origin, n);
  return changed ? n : "";
}

// reset drops the session's key and the nonces; the next proof uses a new key.
export function reset() {
  keyPromise = null;
  nonces.clear();
}

// asksForNonce says whether a response asks for a (new) nonce: an
// authorization server answers 400 {"error":"use_dpop_nonce"} (§8), a
// resource server 401 with WWW-Authenticate: DPoP error="use_dpop_nonce" (§9).
export function asksForNonce(response, body) {
  if (response.status === 400) return body?.error === "use_dpop_nonce";
  if (response.status === 401) return /error\s*=\s*"?use_dpop_nonce"?/i.test(response.headers.get("WWW-Authenticate") || "");
  return false;
}
