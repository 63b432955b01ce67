// Package tenant is devtenant: a local, offline stand-in for an Auth0 tenant,
// configured by the same Deploy CLI tenant.yaml a real tenant is provisioned
// from, plus dev-only users and secrets.
//
// It issues RS256 access tokens shaped like Auth0's (password, password-realm,
// client_credentials, refresh_token with rotation, authorization_code with
// PKCE), serves discovery and a JWKS with Auth0's key lifecycle, a login form
// at /authorize, /userinfo, and a subset of the Management API v2.
//
//	srv, err := tenant.New(tenant.Config{
//		Issuer:     "http://localhost:8400/",
//		TenantFile: "deploy/tenant.yaml",
//		DevDir:     "deploy/dev",
//		DataDir:    ".data/devtenant",
//		Logger:     slog.Default(),
//	})
//	if err != nil { ... }
//	defer srv.Close()
//	http.ListenAndServe(":8400", srv.Handler())
//
// It is a development tool: passwords are in plain files and anyone who can
// reach it can get tokens for the dev users.
package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// RolesClaim is the namespaced claim carrying the user's role names.
const RolesClaim = "https://authmesh.dev/roles"

// maxBody bounds every request body; Auth0's token requests are far smaller.
const maxBody = 64 << 10

// Config configures a Server.
type Config struct {
	// Issuer is the exact iss of every token, with the trailing slash
	// (http://localhost:8400/). It does not need to be the URL the server is
	// reached at.
	Issuer     string
	TenantFile string // deploy/tenant.yaml
	DevDir     string // deploy/dev: users.yaml, client-secrets.yaml, keywords.yaml
	DataDir    string // signing keys and Management API changes; created 0700
	Logger     *slog.Logger
	Now        func() time.Time // default time.Now

	// ManagementRateLimit is how many Management API requests one client may
	// make per ManagementRateWindow (default 1000 per minute).
	ManagementRateLimit  int
	ManagementRateWindow time.Duration
}

// Server is a running tenant. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	model   *Model
	keys    *keyStore
	store   *store
	limiter *rateLimiter
	handler http.Handler
}

// New validates the configuration and the tenant files, loads (or creates) the
// signing keys in DataDir and returns a Server ready to serve.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ManagementRateLimit == 0 {
		cfg.ManagementRateLimit = 1000
	}
	if cfg.ManagementRateWindow == 0 {
		cfg.ManagementRateWindow = time.Minute
	}
	if cfg.ManagementRateLimit < 0 || cfg.ManagementRateWindow < 0 {
		return nil, errors.New("devtenant: ManagementRateLimit and ManagementRateWindow must be positive")
	}
	u, err := url.Parse(cfg.Issuer)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !strings.HasSuffix(cfg.Issuer, "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("devtenant: issuer %q: must be an absolute http(s) URL ending in / (e.g. http://localhost:8400/)", cfg.Issuer)
	}
	switch {
	case cfg.TenantFile == "":
		return nil, errors.New("devtenant: TenantFile is required (deploy/tenant.yaml)")
	case cfg.DevDir == "":
		return nil, errors.New("devtenant: DevDir is required (deploy/dev)")
	case cfg.DataDir == "":
		return nil, errors.New("devtenant: DataDir is required (e.g. .data/devtenant)")
	}
	model, err := LoadModel(cfg.Issuer, cfg.TenantFile, cfg.DevDir)
	if err != nil {
		return nil, fmt.Errorf("devtenant: invalid tenant configuration:\n%w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("devtenant: data dir: %w", err)
	}
	keys, err := openKeyStore(cfg.DataDir, cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("devtenant: %w", err)
	}
	st, err := openStore(cfg.DataDir, model, cfg.Now, cfg.Logger.Warn)
	if err != nil {
		return nil, fmt.Errorf("devtenant: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, model: model, keys: keys, store: st,
		limiter: newRateLimiter(cfg.ManagementRateLimit, cfg.ManagementRateWindow, cfg.Now)}
	s.handler = s.routes()
	s.log.Warn("DEVELOPMENT TENANT — NOT FOR PRODUCTION: devtenant issues tokens for dev users with published passwords; never expose it or trust its issuer outside a dev machine",
		"issuer", cfg.Issuer, "users", len(model.Users), "clients", len(model.Clients), "apis", len(model.APIs))
	return s, nil
}

// Handler serves the tenant's HTTP endpoints.
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases the server's resources. It holds no goroutines or open
// files today (every change is written through), so it only exists to keep
// callers correct if that changes. The state on disk stays.
func (s *Server) Close() error { return nil }

// RotateSigningKey makes the next key current (new tokens are signed with it),
// keeps the old one in the JWKS as previous and creates a new next key.
func (s *Server) RotateSigningKey() error {
	k, err := s.keys.rotate()
	if err == nil {
		s.log.Info("devtenant: signing key rotated", "current_kid", k.KID)
	}
	return err
}

// RevokePreviousKey removes the previous key from the JWKS: tokens signed with it stop verifying.
func (s *Server) RevokePreviousKey() error {
	k, err := s.keys.revokePrevious("")
	if err == nil {
		s.log.Info("devtenant: previous signing key revoked", "kid", k.KID)
	}
	return err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/.well-known/openid-configuration", s.discovery)
	mux.HandleFunc("/.well-known/jwks.json", s.jwks)
	mux.HandleFunc("/oauth/token", s.token)
	mux.HandleFunc("/oauth/revoke", s.revoke)
	mux.HandleFunc("/userinfo", s.userinfo)
	mux.HandleFunc("/authorize", s.authorize)
	s.mgmtRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "error_description": "Not found"})
	})
	return s.logRequests(s.recoverPanics(s.cors(mux)))
}

// --- request-scoped log notes -------------------------------------------------

type notesKey struct{}

type notes struct {
	mu    sync.Mutex
	attrs []any
}

// note adds a safe attribute (never a credential) to the request's log line.
func note(r *http.Request, kv ...any) {
	if n, ok := r.Context().Value(notesKey{}).(*notes); ok {
		n.mu.Lock()
		n.attrs = append(n.attrs, kv...)
		n.mu.Unlock()
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

// logRequests writes one line per request. Only the path is logged: query
// strings and bodies may carry codes, passwords or tokens.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		n := &notes{}
		sw := &statusWriter{ResponseWriter: w}
		r.Body = http.MaxBytesReader(sw, r.Body, maxBody)
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), notesKey{}, n)))
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", sw.status,
			"duration_ms", float64(time.Since(start).Microseconds()) / 1000, "bytes", sw.bytes, "remote", r.RemoteAddr}
		n.mu.Lock()
		attrs = append(attrs, n.attrs...)
		n.mu.Unlock()
		level := slog.LevelInfo
		if sw.status >= 500 {
			level = slog.LevelError
		}
		s.log.Log(r.Context(), level, "devtenant request", attrs...)
	})
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				note(r, "panic", fmt.Sprint(v))
				oauthError(w, http.StatusInternalServerError, "server_error", "Internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// cors lets the browser app (the clients' allowed/web origins) call the
// endpoints a SPA calls directly.
func (s *Server) cors(next http.Handler) http.Handler {
	paths := []string{"/oauth/token", "/oauth/revoke", "/userinfo", "/.well-known/openid-configuration", "/.well-known/jwks.json"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !slices.Contains(paths, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Add("Vary", "Origin")
		if !slices.Contains(s.model.CORSOrigins, origin) {
			if r.Method == http.MethodOptions {
				w.WriteHeader(http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Auth0-Client")
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// --- responses -----------------------------------------------------------------

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError writes Auth0's authentication API error body.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Cache-Control", "no-store")
	if status == http.StatusUnauthorized && code == "invalid_client" {
		w.Header().Set("WWW-Authenticate", `Basic realm="devtenant"`)
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func methodNotAllowed(w http.ResponseWriter, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "Method not allowed; use "+strings.Join(allow, " or "))
}

// --- discovery, keys, health -----------------------------------------------------

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	iss := s.model.Issuer
	w.Header().Set("Cache-Control", "public, max-age=15, stale-while-revalidate=15, stale-if-error=86400")
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                iss,
		"authorization_endpoint":                iss + "authorize",
		"token_endpoint":                        iss + "oauth/token",
		"userinfo_endpoint":                     iss + "userinfo",
		"jwks_uri":                              iss + ".well-known/jwks.json",
		"revocation_endpoint":                   iss + "oauth/revoke",
		"scopes_supported":                      []string{"openid", "profile", "offline_access", "name", "given_name", "family_name", "nickname", "email", "email_verified", "created_at"},
		"response_types_supported":              []string{"code"},
		"response_modes_supported":              []string{"query"},
		"code_challenge_methods_supported":      []string{"S256", "plain"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "none"},
		"grant_types_supported":                 grantNames(true),
		"claims_supported":                      []string{"aud", "auth_time", "created_at", "email", "email_verified", "exp", "family_name", "given_name", "iat", "iss", "name", "nickname", "sub"},
		"request_uri_parameter_supported":       false,
	})
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	// Auth0's own caching headers, so clients behave here as they will there.
	w.Header().Set("Cache-Control", "public, max-age=15, stale-while-revalidate=15, stale-if-error=86400")
	writeJSON(w, http.StatusOK, s.keys.jwks())
}

// --- verifying our own tokens (userinfo, Management API) -------------------------

type verifiedClaims struct {
	Iss         string           `json:"iss"`
	Sub         string           `json:"sub"`
	Aud         jwt.Audience     `json:"aud"`
	Exp         *jwt.NumericDate `json:"exp"`
	Iat         *jwt.NumericDate `json:"iat"`
	Azp         string           `json:"azp"`
	Scope       string           `json:"scope"`
	Gty         any              `json:"gty"`
	Permissions []string         `json:"permissions"`
}

var errBadToken = errors.New("invalid token")

// verify checks a token this tenant issued for audience.
func (s *Server) verify(raw, audience string) (*verifiedClaims, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || len(tok.Headers) != 1 {
		return nil, errBadToken
	}
	pub := s.keys.publicKey(tok.Headers[0].KeyID)
	if pub == nil {
		return nil, errBadToken
	}
	var c verifiedClaims
	if err := tok.Claims(pub, &c); err != nil {
		return nil, errBadToken
	}
	now := s.now()
	if c.Iss != s.model.Issuer || !c.Aud.Contains(audience) || c.Exp == nil || !now.Before(c.Exp.Time().Add(30*time.Second)) {
		return nil, errBadToken
	}
	return &c, nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// --- userinfo and revoke -----------------------------------------------------------

func (s *Server) userinfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodGet, http.MethodPost)
		return
	}
	unauthorized := func(desc string) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devtenant", error="invalid_token", error_description="`+desc+`"`)
		oauthError(w, http.StatusUnauthorized, "invalid_token", desc)
	}
	raw, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devtenant"`)
		oauthError(w, http.StatusUnauthorized, "invalid_request", "Missing access token")
		return
	}
	c, err := s.verify(raw, s.model.Issuer+"userinfo")
	if err != nil {
		unauthorized("The access token is invalid or was not issued for /userinfo")
		return
	}
	u, ok := s.store.userByID(c.Sub)
	if !ok {
		unauthorized("The user no longer exists")
		return
	}
	if u.Blocked {
		oauthError(w, http.StatusUnauthorized, "unauthorized", "user is blocked")
		return
	}
	note(r, "sub", u.ID)
	writeJSON(w, http.StatusOK, profileClaims(u, strings.Fields(c.Scope), map[string]any{"sub": u.ID}))
}

// profileClaims adds the OIDC claims the scopes allow.
func profileClaims(u userRecord, scopes []string, out map[string]any) map[string]any {
	if slices.Contains(scopes, "profile") {
		out["name"] = u.Name
		out["nickname"] = u.Nickname
		out["updated_at"] = u.UpdatedAt.UTC().Format(time.RFC3339Nano)
		if u.GivenName != "" {
			out["given_name"] = u.GivenName
		}
		if u.FamilyName != "" {
			out["family_name"] = u.FamilyName
		}
	}
	if slices.Contains(scopes, "email") {
		out["email"] = u.Email
		out["email_verified"] = u.EmailVerified
	}
	return out
}

// revoke revokes a refresh token's family (RFC 7009); unknown tokens are not an error.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodPost)
		return
	}
	p, perr := readParams(r)
	if perr != nil {
		perr.write(w)
		return
	}
	c, perr := s.authenticateClient(r, p)
	if perr != nil {
		perr.write(w)
		return
	}
	tok := p.get("token")
	if tok == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "Missing required parameter: token")
		return
	}
	s.store.revokeRefresh(tok, c.ID)
	w.WriteHeader(http.StatusOK)
}

// --- params -------------------------------------------------------------------------

type params map[string]string

func (p params) get(k string) string { return p[k] }

type oauthErr struct {
	status     int
	code, desc string
}

func (e *oauthErr) write(w http.ResponseWriter) { oauthError(w, e.status, e.code, e.desc) }

func badRequest(desc string) *oauthErr {
	return &oauthErr{status: http.StatusBadRequest, code: "invalid_request", desc: desc}
}

// readParams reads a form or JSON body, as Auth0 accepts both.
func readParams(r *http.Request) (params, *oauthErr) {
	ct := r.Header.Get("Content-Type")
	mediaType, _, _ := strings.Cut(ct, ";")
	mediaType = strings.ToLower(strings.TrimSpace(mediaType))
	out := params{}
	switch mediaType {
	case "application/json":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, tooLarge(err)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, badRequest("Request body is not a JSON object")
		}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				out[k] = v
			case nil:
			default:
				return nil, badRequest(fmt.Sprintf("Parameter %s must be a string", k))
			}
		}
	case "application/x-www-form-urlencoded", "":
		if err := r.ParseForm(); err != nil {
			return nil, tooLarge(err)
		}
		for k, vs := range r.PostForm {
			if len(vs) > 1 {
				return nil, badRequest(fmt.Sprintf("Parameter %s must not be repeated", k))
			}
			out[k] = vs[0]
		}
	default:
		return nil, &oauthErr{status: http.StatusUnsupportedMediaType, code: "invalid_request",
			desc: "Content-Type must be application/x-www-form-urlencoded or application/json"}
	}
	return out, nil
}

func tooLarge(err error) *oauthErr {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &oauthErr{status: http.StatusRequestEntityTooLarge, code: "invalid_request", desc: "Request body too large"}
	}
	return badRequest("Malformed request body")
}
