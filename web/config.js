// Where the SPA finds its tenant and the services. The defaults are the local
// stack (`make run` or `docker compose up`). For a real Auth0 tenant, set
// issuer to "https://YOUR_TENANT.eu.auth0.com/", tenantLogout to true, register
// this page's origin as the Application's Allowed Callback URL, Allowed Logout
// URL and Allowed Web Origin, and point services at wherever they run.
export const config = Object.freeze({
  // Exactly the `iss` of the tokens (with Auth0's trailing slash); /authorize,
  // /oauth/token and /v2/logout are resolved against it.
  issuer: "http://localhost:8400/",
  clientId: "authmesh-web",
  audience: "https://api.authmesh.dev",
  // offline_access asks for a refresh token; the tenant rotates it on each use.
  scope: "openid profile email offline_access",
  // Registered with the client (deploy/tenant.yaml: ##SPA_ORIGIN##/callback).
  // A static server serves callback/index.html there, which hands the
  // response to the app; a server with an SPA fallback serves the app itself.
  redirectUri: `${window.location.origin}/callback`,
  // Where a tenant logout returns to (an Allowed Logout URL of the client).
  logoutReturnTo: window.location.origin,
  // true: logging out also ends the tenant's login session via /v2/logout
  // (Auth0 keeps one; the local devtenant form does not need it).
  tenantLogout: false,
  services: Object.freeze({
    users: "http://localhost:8401",
    orders: "http://localhost:8402",
    billing: "http://localhost:8403",
  }),
  // NATS over WebSocket, for live order and invoice updates (web/nats.js).
  // For a real deployment, wss:// behind TLS: the access token travels in
  // the CONNECT message. That is a bearer use even of a DPoP-bound token: a
  // CONNECT cannot carry a proof for it, so the NATS server decides whether
  // to accept bound tokens there.
  nats: "ws://localhost:8405",
  // DPoP (RFC 9449, web/dpop.js): token requests carry a proof by a
  // per-session, non-extractable key, so the tenant binds the tokens to it
  // (token_type DPoP) and every service call carries a proof. A tenant or
  // API without DPoP answers Bearer tokens, which are sent as before.
  // false: no proofs, Bearer tokens only.
  dpop: true,
  // Refresh this many seconds before the access token expires.
  refreshLeewaySeconds: 60,
});
