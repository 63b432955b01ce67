// Command echoserver serves one Echo handler three ways, each on its own
// loopback port, so an external load generator (wrk) can compare them in the
// same run: open (no auth), behind pkg/authz's middleware, and behind
// go-jwt-middleware's CheckJWT wrapped with echo.WrapMiddleware (with its
// caching JWKS provider). Both validators fetch keys from a local JWKS served
// by this process, and one RS256 token signed here is accepted by both.
//
// On start it prints one JSON line to stdout:
//
//	{"open":"http://127.0.0.1:N/v1/me","authz":"...","go-jwt-middleware":"...","token":"...","pprof":"..."}
//
// and then serves until SIGTERM or SIGINT. The token is printed on purpose:
// it is a throwaway, signed by a key that lives only in this process.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	jwtmiddleware "github.com/auth0/go-jwt-middleware/v2"
	"github.com/auth0/go-jwt-middleware/v2/jwks"
	"github.com/auth0/go-jwt-middleware/v2/validator"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
)

const (
	audience = "https://api.authmesh.dev"
	kid      = "bench-key"
	path     = "/v1/me"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "echoserver:", err)
		os.Exit(1)
	}
}

// hello is the handler every variant serves; it is trivial on purpose so
// that the measured difference is the auth layer.
func hello(c echo.Context) error { return c.String(http.StatusOK, "ok") }

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out, err := start(ctx)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// start serves the identity provider, the three variants and pprof on
// loopback until ctx ends, and returns their URLs and the token.
func start(ctx context.Context) (map[string]string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	idp, err := listen()
	if err != nil {
		return nil, err
	}
	issuer := "http://" + idp.Addr().String() + "/"
	go serve(ctx, idp, idpHandler(issuer, key))

	token, err := sign(key, issuer)
	if err != nil {
		return nil, err
	}

	// pkg/authz, configured like a service: explicit JWKS URL, issuer, audience.
	keys, err := authz.NewKeyProvider(authz.WithJWKSURL(issuer + ".well-known/jwks.json"))
	if err != nil {
		return nil, err
	}
	if err := keys.Start(ctx); err != nil {
		return nil, err
	}
	v, err := authz.NewValidator(keys, authz.WithIssuers(issuer), authz.WithAudiences(audience))
	if err != nil {
		return nil, err
	}
	withAuthz := echo.New()
	reg := authz.NewRegistry()
	withAuthz.Use(authz.Middleware(v, reg))
	authz.GET(withAuthz, reg, path, hello, authz.RequireAll("read:profile").Users())
	if err := reg.Check(withAuthz.Routes()); err != nil {
		return nil, err
	}

	// go-jwt-middleware as its README shows it: caching provider (discovery)
	// + validator + CheckJWT, wrapped for Echo.
	iu, err := url.Parse(issuer)
	if err != nil {
		return nil, err
	}
	provider := jwks.NewCachingProvider(iu, 10*time.Minute)
	jv, err := validator.New(provider.KeyFunc, validator.RS256, issuer, []string{audience})
	if err != nil {
		return nil, err
	}
	withGoJWT := echo.New()
	withGoJWT.Use(echo.WrapMiddleware(jwtmiddleware.New(jv.ValidateToken).CheckJWT))
	withGoJWT.GET(path, hello)

	open := echo.New()
	open.GET(path, hello)

	out := map[string]string{"token": token}
	for name, e := range map[string]*echo.Echo{"open": open, "authz": withAuthz, "go-jwt-middleware": withGoJWT} {
		e.HideBanner, e.HidePort = true, true
		l, err := listen()
		if err != nil {
			return nil, err
		}
		out[name] = "http://" + l.Addr().String() + path
		go serve(ctx, l, e)
	}
	// pprof on its own port so profiling never shares a listener with the measured ones.
	pl, err := listen()
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	out["pprof"] = "http://" + pl.Addr().String() + "/debug/pprof/"
	go serve(ctx, pl, mux)

	return out, nil
}

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func serve(ctx context.Context, l net.Listener, h http.Handler) {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = s.Close()
	}()
	if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "echoserver:", err)
		os.Exit(1)
	}
}

// idpHandler serves discovery and the JWKS, as an Auth0 tenant would.
func idpHandler(issuer string, key *rsa.PrivateKey) http.Handler {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": issuer, "jwks_uri": issuer + ".well-known/jwks.json"})
	})
	return mux
}

// sign makes an access token shaped like Auth0's (access_token_authz dialect).
func sign(key *rsa.PrivateKey, issuer string) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims := map[string]any{
		"iss":         issuer,
		"sub":         "auth0|000000000000000000000001",
		"aud":         audience,
		"iat":         now.Unix(),
		"exp":         now.Add(2 * time.Hour).Unix(),
		"azp":         "authmesh-cli",
		"scope":       "openid profile",
		"gty":         "password",
		"permissions": []string{"read:profile"},
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}
