package platform

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"github.com/authmesh/authmesh/pkg/platform/telemetry"
)

// Local defaults of the contract (docs/conventions.md).
const (
	DefaultIssuer   = "http://localhost:8400/"
	DefaultAudience = "https://api.authmesh.dev"
	DefaultNATSURL  = "nats://localhost:4222"
	DefaultCORS     = "http://localhost:8404"
)

// meshServices are the services whose M2M client ids the mesh trusts (azp).
var meshServices = []string{"users", "orders", "billing"}

// defaultPorts are the contract's host ports of the services.
var defaultPorts = map[string]string{
	"users":   ":8401",
	"orders":  ":8402",
	"billing": ":8403",
	"tts":     ":8406",
}

// Auth0 is the identity-provider part of the configuration, shared by every
// service (Auth0's own, unprefixed variable names).
type Auth0 struct {
	Domain   string   // AUTH0_DOMAIN; empty for the local tenant
	Audience string   // AUTH0_AUDIENCE
	Issuer   string   // the first of Issuers: the tenant's URLs default from it
	Issuers  []string // AUTH0_ISSUER, comma-separated: every name of the tenant (custom domains), each compared exactly
	JWKSURL  string   // AUTH0_JWKS_URL: where keys are fetched (may differ from the issuer's host)
	TokenURL string   // AUTH0_TOKEN_URL: client-credentials endpoint

	// ManagementURL and ManagementAudience come from <P>MGMT_URL and
	// <P>MGMT_AUDIENCE (only the users service reads them).
	ManagementURL      string
	ManagementAudience string

	// TenantFile (AUTH0_TENANT_FILE) is the Deploy CLI tenant.yaml; when set,
	// the service refuses to start if a route policy names a permission the
	// tenant's API does not define.
	TenantFile string
}

// Config is a service's configuration, read from the environment by LoadConfig.
type Config struct {
	Service string // "users", "orders", "billing"
	Prefix  string // "BILLING_"

	HTTPAddr     string
	NATSURL      string // comma-separated server URLs
	NATSReplicas int
	// Callout is the Transaction Token Service's NATS keys (it answers the
	// auth callout); empty for every other service, which connects with its
	// client-credentials token.
	Callout mesh.Keys

	ClientID     string
	ClientSecret string
	CORSOrigins  []string
	LogLevel     slog.Level

	Auth0 Auth0
	Txn   Txn
	// Telemetry is tracing, from the standard OTEL_* variables (off without
	// an OTLP endpoint; see package telemetry).
	Telemetry telemetry.Config

	getenv func(string) string
}

// Getenv returns the service-prefixed variable name (e.g. "MGMT_URL" reads
// USERS_MGMT_URL), so service-specific settings follow the same convention.
func (c Config) Getenv(name string) string {
	if c.getenv == nil {
		return ""
	}
	return c.getenv(c.Prefix + name)
}

// PeerClientID returns the M2M client id of service peer ("orders"): the
// <PEER>_CLIENT_ID variable that service reads for its own id, else, for the
// local tenant only, "<peer>-service". Receivers authorize a peer's M2M
// tokens by it (azp), so against a real Auth0 tenant, whose client ids are
// generated, LoadConfig requires the ids of users, orders and billing; for
// another peer without its variable the answer is "", which admits no client.
func (c Config) PeerClientID(peer string) string {
	if peer == c.Service && c.ClientID != "" {
		return c.ClientID
	}
	if c.getenv != nil {
		if v := strings.TrimSpace(c.getenv(strings.ToUpper(peer) + "_CLIENT_ID")); v != "" {
			return v
		}
	}
	if c.Auth0.Domain != "" {
		return ""
	}
	return peer + "-service"
}

// String renders the configuration without secrets, for the start-up log.
func (c Config) String() string {
	return fmt.Sprintf("service=%s http=%s nats=%s replicas=%d client_id=%s issuer=%s audience=%s jwks=%s tracing=%s",
		c.Service, c.HTTPAddr, c.NATSURL, c.NATSReplicas, c.ClientID, strings.Join(c.Auth0.Issuers, ","), c.Auth0.Audience, c.Auth0.JWKSURL, c.Telemetry)
}

// LoadConfig reads the configuration of service ("users", "orders" or
// "billing"; the prefix is its upper-case name and "_") through getenv
// (os.Getenv in production, a map in tests). Without AUTH0_DOMAIN every value
// has the local stack's default. With AUTH0_DOMAIN (a real tenant) no dev
// default applies to identities and secrets: the service's client id and
// secret (the TTS: its NATS seeds), and the client ids of users, orders
// and billing must be set, else the error names every missing variable.
// Invalid values are errors naming the variable.
func LoadConfig(service string, getenv func(string) string) (Config, error) {
	if service == "" || strings.ToLower(service) != service || strings.ContainsAny(service, " _-/") {
		return Config{}, fmt.Errorf("platform: invalid service name %q", service)
	}
	if getenv == nil {
		return Config{}, errors.New("platform: getenv is nil")
	}
	p := strings.ToUpper(service) + "_"
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	var errs []error
	// devDefault is a dev-only value: the local tenant's and dev NATS's
	// published names and secrets. Against a real tenant there is none.
	realTenant := get("AUTH0_DOMAIN", "") != ""
	var missing []string
	devDefault := func(name, def string) string {
		v := get(name, "")
		if v != "" {
			return v
		}
		if realTenant {
			missing = append(missing, name)
			return ""
		}
		return def
	}

	cfg := Config{Service: service, Prefix: p, getenv: getenv}
	defAddr, ok := defaultPorts[service]
	if !ok {
		defAddr = ":8080"
	}
	cfg.HTTPAddr = get(p+"HTTP_ADDR", defAddr)
	if _, _, err := net.SplitHostPort(cfg.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("%sHTTP_ADDR %q: %w", p, cfg.HTTPAddr, err))
	}
	cfg.NATSURL = get(p+"NATS_URL", DefaultNATSURL)
	for _, u := range strings.Split(cfg.NATSURL, ",") {
		if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || pu.Host == "" {
			errs = append(errs, fmt.Errorf("%sNATS_URL: %q is not a server URL", p, u))
		}
	}
	rep := get(p+"NATS_REPLICAS", "1")
	n, err := strconv.Atoi(rep)
	if err != nil || n < 1 || n > 5 {
		errs = append(errs, fmt.Errorf("%sNATS_REPLICAS %q: want an integer from 1 to 5", p, rep))
	}
	cfg.NATSReplicas = n
	if service == TokenServiceName {
		// The Transaction Token Service has no client of its own: it
		// verifies tokens, signs with its own keys, and holds the only
		// static NATS credentials (it answers the auth callout).
		d := mesh.DevKeys
		cfg.Callout = mesh.Keys{
			Issuer:  devDefault(p+"CALLOUT_ISSUER_SEED", d.Issuer),
			XKey:    devDefault(p+"CALLOUT_XKEY_SEED", d.XKey),
			Service: devDefault(p+"NATS_SEED", d.Service),
			System:  devDefault(p+"SYS_NATS_SEED", d.System),
		}
		if k := cfg.Callout; k.Issuer != "" && k.XKey != "" && k.Service != "" && k.System != "" {
			if _, err := k.Public(); err != nil {
				errs = append(errs, fmt.Errorf("%sNATS_SEED, %sSYS_NATS_SEED or %sCALLOUT_*_SEED: %w", p, p, p, err))
			}
		}
	} else {
		cfg.ClientID = devDefault(p+"CLIENT_ID", service+"-service")
		cfg.ClientSecret = devDefault(p+"CLIENT_SECRET", service+"-service-dev-secret")
	}
	for _, peer := range meshServices {
		if peer != service {
			devDefault(strings.ToUpper(peer)+"_CLIENT_ID", "")
		}
	}
	for _, o := range strings.Split(get(p+"CORS_ORIGINS", DefaultCORS), ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.CORSOrigins = append(cfg.CORSOrigins, o)
		}
	}
	lvl := get(p+"LOG_LEVEL", "info")
	if err := cfg.LogLevel.UnmarshalText([]byte(lvl)); err != nil {
		errs = append(errs, fmt.Errorf("%sLOG_LEVEL %q: want debug, info, warn or error", p, lvl))
	}

	a, err := loadAuth0(get, p)
	if err != nil {
		errs = append(errs, err)
	}
	cfg.Auth0 = a
	txnDefault := devDefault
	if service == TokenServiceName {
		txnDefault = get // it serves those keys; it never fetches them
	}
	if cfg.Txn, err = loadTxn(get, txnDefault); err != nil {
		errs = append(errs, err)
	}
	if cfg.Telemetry, err = telemetry.Parse(service, getenv); err != nil {
		errs = append(errs, err)
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("AUTH0_DOMAIN is set (a real tenant), so these have no dev default and must be set: %s", strings.Join(missing, ", ")))
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("platform: config: %w", err)
	}
	return cfg, nil
}

// loadAuth0 derives the identity-provider URLs. AUTH0_DOMAIN names a real
// tenant: it supplies the issuer and, because the canonical domain always
// serves the tenant's keys and token endpoint even when AUTH0_ISSUER names a
// custom domain, the JWKS, token and Management URLs. Explicit variables win.
func loadAuth0(get func(string, string) string, p string) (Auth0, error) {
	var a Auth0
	var errs []error
	a.Domain = get("AUTH0_DOMAIN", "")
	base := "" // where keys, token endpoint and Management API live
	if a.Domain != "" {
		if strings.ContainsAny(a.Domain, "/ \t") || !strings.Contains(a.Domain, ".") {
			errs = append(errs, fmt.Errorf("AUTH0_DOMAIN %q: want a host name like tenant.eu.auth0.com (no scheme, no path)", a.Domain))
		}
		base = "https://" + a.Domain + "/"
	}
	defIssuer := DefaultIssuer
	if base != "" {
		defIssuer = base
	}
	// One tenant answers under each of its custom domains and its canonical
	// domain, with the same keys: the names are several, the keys one set.
	for _, iss := range strings.Split(get("AUTH0_ISSUER", defIssuer), ",") {
		iss = strings.TrimSpace(iss)
		switch err := checkURL("AUTH0_ISSUER", iss); {
		case err != nil:
			errs = append(errs, err)
		case slices.Contains(a.Issuers, iss):
			errs = append(errs, fmt.Errorf("AUTH0_ISSUER: %q is listed twice", iss))
		default:
			a.Issuers = append(a.Issuers, iss)
		}
	}
	if len(a.Issuers) > 0 {
		a.Issuer = a.Issuers[0]
	}
	if base == "" {
		base = a.Issuer
		if !strings.HasSuffix(base, "/") {
			base += "/"
		}
	}
	a.Audience = get("AUTH0_AUDIENCE", DefaultAudience)
	a.TenantFile = get("AUTH0_TENANT_FILE", "")
	a.JWKSURL = get("AUTH0_JWKS_URL", base+".well-known/jwks.json")
	a.TokenURL = get("AUTH0_TOKEN_URL", base+"oauth/token")
	a.ManagementURL = get(p+"MGMT_URL", base+"api/v2/")
	a.ManagementAudience = get(p+"MGMT_AUDIENCE", base+"api/v2/")
	for name, v := range map[string]string{"AUTH0_JWKS_URL": a.JWKSURL, "AUTH0_TOKEN_URL": a.TokenURL, p + "MGMT_URL": a.ManagementURL} {
		if err := checkURL(name, v); err != nil {
			errs = append(errs, err)
		}
	}
	return a, errors.Join(errs...)
}

func checkURL(name, v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q: want an absolute http(s) URL", name, v)
	}
	return nil
}
