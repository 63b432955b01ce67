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
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
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
	// Now is the tenant's clock (default time.Now): what it issues is dated
	// by it. The tokens it verifies itself (/userinfo, the Management API)
	// are checked by pkg/authz's Validator on the wall clock, as the
	// services check them.
	Now func() time.Time

	// ManagementRateLimit is how many Management API requests one client may
	// make per ManagementRateWindow (default 1000 per minute).
	ManagementRateLimit  int
	ManagementRateWindow time.Duration

	// DPoPNonces makes public clients' DPoP token requests use a server
	// nonce (400 use_dpop_nonce with DPoP-Nonce first), as Auth0 does.
	DPoPNonces bool
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
	dpop    *tokenDPoP
	// ownTokens verifies the tokens sent to /userinfo and the Management API.
	ownTokens ownTokens
	handler   http.Handler
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
	if s.dpop, err = newTokenDPoP(cfg.DPoPNonces); err != nil {
		return nil, fmt.Errorf("devtenant: %w", err)
	}
	if _, err := s.validator(model.MgmtAud); err != nil {
		return nil, fmt.Errorf("devtenant: token validators: %w", err)
	}
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

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/.well-known/openid-configuration", s.discovery)
	mux.HandleFunc("/.well-known/jwks.json", s.jwks)
	mux.HandleFunc("/oauth/token", oauthPost(s.token))
	mux.HandleFunc("/oauth/revoke", oauthPost(s.revoke))
	mux.HandleFunc("/userinfo", s.userinfo)
	mux.HandleFunc("/authorize", s.authorize)
	s.mgmtRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "error_description": "Not found"})
	})
	return s.logRequests(s.recoverPanics(s.cors(mux)))
}
